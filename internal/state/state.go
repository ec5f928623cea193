// Package state defines the record that livesplice keeps inside every
// process it patched: which updates are applied, where their code lives and
// the bytes each trampoline replaced. It lives in the target so that any
// later livesplice invocation can show or undo what an earlier one did.
package state

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// Version is the version of the record layout (docs/update-format.md).
// A record is written as version 1 unless a redirect in it has a lead
// (VersionLead): a livesplice that knows only version 1 would write and
// check its entry bytes at the wrong place, so it must refuse the record.
const (
	Version     = 1
	VersionLead = 2
)

// version is the layout version r needs.
func (r *Record) version() uint32 {
	for _, a := range r.Updates {
		for _, f := range a.Funcs {
			if f.Lead != 0 {
				return VersionLead
			}
		}
	}
	return Version
}

// Magic starts the record.
const Magic = "LIVESPLICE-STATE"

// MappingName is the name of the memfd that holds the record; it shows in
// /proc/PID/maps as "/memfd:livesplice-state (deleted)".
const MappingName = "livesplice-state"

// MappingPath is how the record's memfd shows in /proc/PID/maps.
const MappingPath = "/memfd:" + MappingName + " (deleted)"

// Size is the size of the record's mapping.
const Size = 1 << 20

// HeaderSize is the size of the fixed header at the start of the mapping.
const HeaderSize = 32

// ErrCorrupt is wrapped when the record cannot be decoded.
var ErrCorrupt = errors.New("corrupt state record")

// Record is everything applied to one process, oldest first.
type Record struct {
	Updates []Applied `json:"updates"`
}

// Statuses of an update in the record. Only "applied" is at rest; the
// others journal an operation in flight, which the next livesplice command
// on the process finishes or rolls back. Whether the new code runs is
// decided by the update's commit flag byte in the target alone.
const (
	StatusPreparing  = "preparing"  // region mapped, nothing reachable
	StatusCommitting = "committing" // entries being redirected to stubs; flag flips last
	StatusApplied    = "applied"
	StatusUndoing    = "undoing" // flag cleared (or about to be), entries being restored
)

// Applied is one update applied to the process.
type Applied struct {
	ID        string    `json:"id"`
	Status    string    `json:"status"`
	Flags     []uint64  `json:"flags"`   // the commit flag byte (1 = new code runs); records of earlier versions: one per object
	Targets   []string  `json:"targets"` // paths of the patched objects as mapped
	AppliedAt string    `json:"applied_at"`
	Regions   []Region  `json:"regions"` // memory holding the update's code and data
	Funcs     []Patched `json:"funcs"`
	DependsOn []string  `json:"depends_on,omitempty"`
	Defs      []Def     `json:"defs,omitempty"`   // symbols the update defined, where they live
	Frames    []Region  `json:"frames,omitempty"` // the update's .eh_frame copies (call frame information of its code)
	// Unwinder journals handing Frames to the program's unwinder
	// (libgcc's __register_frame): "", "registering", "registered",
	// "deregistering".
	Unwinder string `json:"unwinder,omitempty"`
	Hooks    []Hook `json:"hooks,omitempty"` // the update's undo hooks, for undo to call
}

// Hook is a hook of an applied update: undo calls it (docs/custom-code.md).
type Hook struct {
	Kind string `json:"kind"` // update.Hook* kinds: pre_undo, check_undo, undo, post_undo, fail_undo
	Name string `json:"name"`
	Addr uint64 `json:"addr"`
}

// Def is a symbol an applied update defined.
type Def struct {
	Name string `json:"name"`
	File string `json:"file,omitempty"`
	Addr uint64 `json:"addr"`
	Size uint64 `json:"size"`
	Func bool   `json:"func,omitempty"`
}

// Defined returns the places where applied updates defined a symbol
// (file "" matches global definitions only).
func (r *Record) Defined(file, name string) []Def {
	var out []Def
	for _, u := range r.Updates {
		for _, d := range u.Defs {
			if d.Name == name && d.File == file {
				out = append(out, d)
			}
		}
	}
	return out
}

// DefinedIn is Defined for the definitions an update made in the region of
// the object mapped at path: a static of one source file may be defined by
// an update in two objects (a library and the one it is split from, built
// from the same file), and each object's code must find its own. Every
// record pairs its targets and regions one to one.
func (r *Record) DefinedIn(path, file, name string) []Def {
	var out []Def
	for _, u := range r.Updates {
		for _, d := range u.Defs {
			if d.Name == name && d.File == file && u.inRegionOf(path, d.Addr) {
				out = append(out, d)
			}
		}
	}
	return out
}

// inRegionOf reports whether addr lies in the region the update made for
// the object at path.
func (u *Applied) inRegionOf(path string, addr uint64) bool {
	for i, t := range u.Targets {
		if i >= len(u.Regions) {
			break
		}
		if g := u.Regions[i]; t == path && addr >= g.Addr && addr < g.Addr+g.Size {
			return true
		}
	}
	return false
}

// Region is a mapping made for an update.
type Region struct {
	Addr uint64 `json:"addr"`
	Size uint64 `json:"size"`
	Text uint64 `json:"text"` // bytes of code at the start of the region
}

// Patched is one redirected function.
type Patched struct {
	Name    string `json:"name"`
	File    string `json:"file,omitempty"`
	Addr    uint64 `json:"addr"` // where the trampoline is written
	Size    uint64 `json:"size"` // size of the code at Addr
	Stub    uint64 `json:"stub"` // the gate the entry jumps to
	New     uint64 `json:"new"`  // address of the replacement
	NewSize uint64 `json:"new_size"`
	Saved   []byte `json:"saved"` // bytes the entry jump replaced
	Jump    []byte `json:"jump"`  // the entry jump, to Stub
	// Lead: how many bytes before Addr Saved and Jump begin (0, or 5 for
	// a function entered through the padding before it: a jmp rel32
	// there, then a jmp rel8 to it at Addr).
	Lead uint64 `json:"lead,omitempty"`
}

// At is where Jump and Saved are written.
func (p *Patched) At() uint64 { return p.Addr - p.Lead }

// Overlaps reports whether the bytes p's entry jump writes meet [lo, hi).
func (p *Patched) Overlaps(lo, hi uint64) bool {
	return p.At() < hi && lo < p.At()+uint64(len(p.Jump))
}

// Find returns the applied update with this id.
func (r *Record) Find(id string) (int, *Applied) {
	for i := range r.Updates {
		if r.Updates[i].ID == id {
			return i, &r.Updates[i]
		}
	}
	return -1, nil
}

// Owner returns the update whose regions contain addr.
func (r *Record) Owner(addr uint64) *Applied {
	for i := range r.Updates {
		for _, g := range r.Updates[i].Regions {
			if addr >= g.Addr && addr < g.Addr+g.Size {
				return &r.Updates[i]
			}
		}
	}
	return nil
}

// Trampoline returns the redirect written at addr by any applied update.
func (r *Record) Trampoline(addr uint64) *Patched {
	for i := range r.Updates {
		for j := range r.Updates[i].Funcs {
			if r.Updates[i].Funcs[j].Addr == addr {
				return &r.Updates[i].Funcs[j]
			}
		}
	}
	return nil
}

// Overlapping returns a redirect of any applied update whose written
// bytes meet [lo, hi).
func (r *Record) Overlapping(lo, hi uint64) *Patched {
	for i := range r.Updates {
		for j := range r.Updates[i].Funcs {
			f := &r.Updates[i].Funcs[j]
			if f.Overlaps(lo, hi) {
				return f
			}
		}
	}
	return nil
}

// The mapping holds the header and two body slots. A new body is written
// into the slot the header does not point at, then one write of the header
// switches to it: a livesplice killed between any two writes leaves the
// old record or the new one, never a torn one.
const (
	slotBase = 4096
	SlotSize = (Size - slotBase) / 2
)

// SlotOffset is where body slot i (0 or 1) starts in the mapping.
func SlotOffset(i int) uint64 { return slotBase + uint64(i)*SlotSize }

// Encode lays out the record for body slot slot: the header (magic,
// version u32, body length u32, body offset u64) and the JSON body.
func Encode(r *Record, slot int) (header, body []byte, err error) {
	body, err = json.Marshal(r)
	if err != nil {
		return nil, nil, err
	}
	if len(body) > SlotSize {
		return nil, nil, fmt.Errorf("state record too large (%d bytes)", len(body))
	}
	header = make([]byte, HeaderSize)
	copy(header, Magic)
	binary.LittleEndian.PutUint32(header[16:], r.version())
	binary.LittleEndian.PutUint32(header[20:], uint32(len(body)))
	binary.LittleEndian.PutUint64(header[24:], SlotOffset(slot))
	return header, body, nil
}

// DecodeHeader returns the body's offset and length from a record header;
// length 0 for an empty (never written) record.
func DecodeHeader(h []byte) (off uint64, n int, err error) {
	if len(h) < HeaderSize {
		return 0, 0, fmt.Errorf("%w: short header", ErrCorrupt)
	}
	if bytes.Equal(h[:HeaderSize], make([]byte, HeaderSize)) {
		return SlotOffset(1), 0, nil
	}
	if string(h[:16]) != Magic {
		return 0, 0, fmt.Errorf("%w: bad magic", ErrCorrupt)
	}
	if v := binary.LittleEndian.Uint32(h[16:]); v != Version && v != VersionLead {
		return 0, 0, fmt.Errorf("state record version %d not supported (this livesplice reads %d and %d)", v, Version, VersionLead)
	}
	n = int(binary.LittleEndian.Uint32(h[20:]))
	off = binary.LittleEndian.Uint64(h[24:])
	if (off != SlotOffset(0) && off != SlotOffset(1)) || n > SlotSize {
		return 0, 0, fmt.Errorf("%w: body at %d, length %d", ErrCorrupt, off, n)
	}
	return off, n, nil
}

// Slot returns the slot index of a body offset.
func Slot(off uint64) int {
	if off == SlotOffset(0) {
		return 0
	}
	return 1
}

// DecodeBody decodes the JSON body.
func DecodeBody(body []byte) (*Record, error) {
	var r Record
	if len(body) == 0 {
		return &r, nil
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return &r, nil
}
