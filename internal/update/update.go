// Package update defines the update file: the deterministic spec that
// `livesplice create` writes and `livesplice apply` reads. Nothing in it
// depends on a running target; addresses are decided at apply time.
package update

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/google/renameio/v2"
)

// FormatVersion is the version of the update file format this package
// reads and writes (docs/update-format.md).
const FormatVersion = 2

// OldestFormat is the oldest version Unmarshal still reads: version 1
// files lack Code.Rodata (run-pre matching then compares code only) and
// Function.Why.
const OldestFormat = 1

// Magic is the first word of every update file.
const Magic = "livesplice-update"

// ErrCorrupt is returned for a file that is not a well-formed update.
var ErrCorrupt = errors.New("corrupt update file")

// File is one update: an ID and the changes to each ELF output it touches.
type File struct {
	Format int    `json:"format"`
	ID     string `json:"id"`
	Kind   string `json:"kind"`         // KindProcess or KindKernel
	Patch  string `json:"patch_sha256"` // hash of the source patch
	// Requires lists the ids of the updates whose code this one was built
	// on (they must be applied first, and undone after it).
	Requires []string `json:"requires,omitempty"`
	// Kernel holds what only a kernel update has: the livepatch module.
	Kernel *Kernel `json:"kernel,omitempty"`
	// Debian names the Debian change an update of a distribution's files
	// brings (create --deb; format version 2).
	Debian  *Debian  `json:"debian,omitempty"`
	Targets []Target `json:"targets"`
}

// Debian is where the code of an update made by create --deb comes from.
type Debian struct {
	Source string   `json:"source"`          // source package
	From   string   `json:"from"`            // the installed version whose files the update patches
	To     string   `json:"to,omitempty"`    // the newer version whose change it is (--to)
	Patch  string   `json:"patch,omitempty"` // the debian/patches entry it is (--split)
	CVEs   []string `json:"cves,omitempty"`  // CVE ids named by the patch's header or debian/changelog, sorted
}

// Update kinds.
const (
	KindProcess = "process" // executables and shared libraries, spliced with ptrace
	KindKernel  = "kernel"  // the running Linux kernel, through a livepatch module
)

// Kernel is the kernel-only part of an update. Its Targets are one per
// patched kernel object ("vmlinux" or a module's name); their Functions are
// the replaced functions with their pre code (run-pre matched against the
// running kernel before the module is loaded); their Sections are empty
// and Function.Section is -1, because the new code lives in Module.
type Kernel struct {
	Release    string `json:"release"`     // uname -r of the kernel the update was built for
	ModuleName string `json:"module_name"` // module and /sys/kernel/livepatch/<name>
	Module     []byte `json:"module"`      // the livepatch module (.ko)
}

// Target holds the changes to one ELF output (executable or shared library).
type Target struct {
	Path       string     `json:"path"`             // output path relative to the source tree
	Soname     string     `json:"soname,omitempty"` // DT_SONAME of a shared library
	PreBuildID string     `json:"pre_build_id,omitempty"`
	Sections   []Section  `json:"sections"`  // code and data carried by the update
	Symbols    []Symbol   `json:"symbols"`   // every relocation target, in symbolic form
	Functions  []Function `json:"functions"` // replaced and new functions
	// Hooks are the custom code apply and undo call in the target
	// (livesplice.h), per kind in the order the patch defines them.
	Hooks []Hook `json:"hooks,omitempty"`
	// Symtab is the symbol table of a stripped target file (a
	// distribution's), recovered by create from a rebuild whose code is
	// identical to that file's (docs/deb.md).
	Symtab *Symtab `json:"symtab,omitempty"`
}

// Symtab is a recovered symbol table; apply uses it only for a mapped file
// whose GNU build-id is BuildID.
type Symtab struct {
	BuildID string      `json:"build_id"`
	Symbols []SymtabSym `json:"symbols"`
}

// SymtabSym is one function or object of a recovered symbol table.
type SymtabSym struct {
	Name   string `json:"name"`
	File   string `json:"file,omitempty"` // STT_FILE scope of a static symbol
	Addr   uint64 `json:"addr"`           // link-time address
	Size   uint64 `json:"size"`
	Func   bool   `json:"func,omitempty"`   // STT_FUNC, else STT_OBJECT
	Global bool   `json:"global,omitempty"` // global or weak binding, else static
}

// Hook kinds: when apply and undo call a hook (docs/custom-code.md).
const (
	HookPreApply   = "pre_apply"   // int fn(void): before anything changes; non-zero vetoes
	HookCheckApply = "check_apply" // int fn(void): world stopped, before the commit; non-zero vetoes
	HookApply      = "apply"       // void fn(void): world stopped, after the commit
	HookPostApply  = "post_apply"  // void fn(void): after the target resumed
	HookFailApply  = "fail_apply"  // void fn(void): the apply was abandoned after PRE_APPLY
	HookPreUndo    = "pre_undo"
	HookCheckUndo  = "check_undo"
	HookUndo       = "undo"
	HookPostUndo   = "post_undo"
	HookFailUndo   = "fail_undo"
)

// HookKinds lists every hook kind.
var HookKinds = []string{HookPreApply, HookCheckApply, HookApply, HookPostApply, HookFailApply,
	HookPreUndo, HookCheckUndo, HookUndo, HookPostUndo, HookFailUndo}

// HookVetoes reports whether a hook of kind returns int, non-zero to veto.
func HookVetoes(kind string) bool {
	switch kind {
	case HookPreApply, HookCheckApply, HookPreUndo, HookCheckUndo:
		return true
	}
	return false
}

// Hook is a function apply or undo calls in the target.
type Hook struct {
	Kind   string `json:"kind"`   // one of HookKinds
	Name   string `json:"name"`   // the function's name, for messages
	Symbol int    `json:"symbol"` // index into Target.Symbols: where the function is
}

// Section kinds.
const (
	KindText   = "text"
	KindRodata = "rodata"
	KindData   = "data"
	KindBss    = "bss"
)

// Section is a piece of code or data that apply copies into the target.
type Section struct {
	Name   string  `json:"name"` // section name in the post object, for diagnostics
	Kind   string  `json:"kind"`
	Align  uint64  `json:"align"`
	Size   uint64  `json:"size"`
	Data   []byte  `json:"data,omitempty"` // nil for bss
	Relocs []Reloc `json:"relocs,omitempty"`
	Defs   []Def   `json:"defs,omitempty"` // named symbols defined in the section
}

// EHFrameName names a rodata section that holds the call frame information
// (.eh_frame format: CIEs, FDEs, a zero terminator) of one object's carried
// code. apply records where it lies so that unwinders (gdb through
// `show --gdb`) can walk through new code.
const EHFrameName = ".eh_frame"

// Def names a symbol an update defines, so that a later update built on
// this one can find it in the running process.
type Def struct {
	Name   string `json:"name"`
	File   string `json:"file,omitempty"` // STT_FILE scope of a static symbol
	Offset uint64 `json:"offset"`
	Size   uint64 `json:"size"`
	Func   bool   `json:"func,omitempty"`
}

// Reloc is an ELF relocation in symbolic form: at Offset, write the value of
// Symbols[Symbol] + Addend in the way Type (an R_X86_64_* number) says.
type Reloc struct {
	Offset uint64 `json:"offset"`
	Type   uint32 `json:"type"`
	Symbol int    `json:"symbol"`
	Addend int64  `json:"addend"`
}

// Symbol kinds.
const (
	SymGlobal  = "global"  // resolved by name through the target's global scope
	SymLocal   = "local"   // a static symbol of File, resolved in the target object
	SymSection = "section" // a place inside Sections[Section]
)

// Symbol is a relocation target.
type Symbol struct {
	Kind    string `json:"kind"`
	Name    string `json:"name,omitempty"`
	File    string `json:"file,omitempty"`    // source file of a local symbol (STT_FILE)
	Type    string `json:"type,omitempty"`    // "func", "object" or ""
	Section int    `json:"section,omitempty"` // for SymSection
	Offset  uint64 `json:"offset,omitempty"`  // for SymSection
}

// Function statuses.
const (
	StatusReplaced = "replaced"
	StatusNew      = "new"
)

// Function is a replaced or new function.
type Function struct {
	Name    string `json:"name"`
	File    string `json:"file,omitempty"`
	Status  string `json:"status"`
	Symbol  int    `json:"symbol"`  // identity of the running (pre) function, for replaced ones
	Section int    `json:"section"` // post code
	Size    uint64 `json:"size"`
	Pre     *Code  `json:"pre,omitempty"` // pre code, for run-pre matching
	// Why says why the function is in the update (format 2; empty in
	// older files): one or more reasons, strongest first.
	Why []Reason `json:"why,omitempty"`
}

// Reason kinds: why a function is in an update.
const (
	ReasonNew     = "new"            // the post build has it, the pre build does not
	ReasonSource  = "changed-source" // the patch changed its source lines (Detail: FILE:LINE)
	ReasonCode    = "changed-code"   // its own instructions or the code/symbols they reach changed
	ReasonLines   = "moved-lines"    // only line numbers in its code changed (__LINE__; Detail: the file)
	ReasonData    = "changed-data"   // same instructions, but read-only data it references changed
	ReasonClone   = "clone"          // a compiler clone (.isra, .constprop, .part, ...) of Detail
	ReasonInlined = "inlined"        // Detail's code, inlined into it, changed
	ReasonIPARA   = "ipa-ra"         // only GCC's -fipa-ra changed its code, but new code (Detail) refers to it
)

// Reason is one cause of a function's presence in an update.
type Reason struct {
	Kind   string `json:"kind"`             // one of the Reason* kinds (readers accept others)
	Detail string `json:"detail,omitempty"` // what: a datum, a function's name
}

// Code is a function's bytes with its relocations (symbols index Target.Symbols).
type Code struct {
	Data   []byte  `json:"data"`
	Relocs []Reloc `json:"relocs,omitempty"`
	// Rodata (pre code only, format 2) holds the bytes of each read-only
	// datum the code reaches, which run-pre matching compares with the
	// running program's: the data the code uses is part of its source.
	Rodata []Datum `json:"rodata,omitempty"`
}

// Datum is a read-only datum (string literal, constant, constant table,
// jump table) that pre code reaches through one of its relocations.
type Datum struct {
	Reloc uint64 `json:"reloc"` // Offset of the relocation in Code.Relocs that reaches it
	// At places it: the datum starts at S + A + At, S being the value
	// run-pre matching reads for that relocation and A its addend.
	At   int64  `json:"at"`
	Name string `json:"name"` // for messages: string "...", an object's name, or section+offset
	Data []byte `json:"data"` // its bytes in the pre build (a string with its NUL)
	// Holes are relocation fields inside the datum (jump table entries,
	// pointers), whose running bytes depend on where things were loaded.
	Holes []Hole `json:"holes,omitempty"`
}

// Hole is a range of a Datum that matching does not compare.
type Hole struct {
	Offset uint64 `json:"offset"`
	Size   uint64 `json:"size"`
}

// String says the reason in words, as `info` prints it.
func (r Reason) String() string {
	var w string
	switch r.Kind {
	case ReasonNew:
		w = "new function"
	case ReasonSource:
		w = "changed source at"
	case ReasonCode:
		w = "changed code"
	case ReasonLines:
		w = "only __LINE__ numbers moved in"
	case ReasonData:
		w = "references changed data"
	case ReasonClone:
		w = "clone of"
	case ReasonInlined:
		w = "inlines changed"
	case ReasonIPARA:
		w = "only -fipa-ra changed it; referred to by the new code of"
		if r.Detail == "" {
			w = "only -fipa-ra changed it"
		}
	default:
		w = r.Kind
	}
	if r.Detail != "" {
		w += " " + r.Detail
	}
	return w
}

// Marshal encodes f deterministically: a header line with the format version
// and the SHA-256 of the body, then the JSON body.
func Marshal(f *File) ([]byte, error) {
	f.Format = FormatVersion
	if err := f.Validate(); err != nil {
		return nil, err
	}
	body, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		return nil, fmt.Errorf("encode update %s: %w", f.ID, err)
	}
	body = append(body, '\n')
	sum := sha256.Sum256(body)
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %d sha256=%s\n", Magic, FormatVersion, hex.EncodeToString(sum[:]))
	b.Write(body)
	return b.Bytes(), nil
}

// Unmarshal decodes and validates an update file.
func Unmarshal(data []byte) (*File, error) {
	nl := bytes.IndexByte(data, '\n')
	if nl < 0 || nl > 200 {
		return nil, fmt.Errorf("%w: no header line", ErrCorrupt)
	}
	fields := strings.Fields(string(data[:nl]))
	if len(fields) != 3 || fields[0] != Magic {
		return nil, fmt.Errorf("%w: not a livesplice update (bad magic)", ErrCorrupt)
	}
	ver, err := strconv.Atoi(fields[1])
	if err != nil {
		return nil, fmt.Errorf("%w: bad version %q", ErrCorrupt, fields[1])
	}
	if ver < OldestFormat || ver > FormatVersion {
		return nil, fmt.Errorf("update format version %d not supported (this livesplice reads versions %d to %d)", ver, OldestFormat, FormatVersion)
	}
	want, ok := strings.CutPrefix(fields[2], "sha256=")
	if !ok {
		return nil, fmt.Errorf("%w: no checksum", ErrCorrupt)
	}
	body := data[nl+1:]
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != want {
		return nil, fmt.Errorf("%w: checksum mismatch (file damaged or edited)", ErrCorrupt)
	}
	var f File
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if f.Format != ver {
		return nil, fmt.Errorf("%w: header version %d, body version %d", ErrCorrupt, ver, f.Format)
	}
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return &f, nil
}

// ReadFile reads and decodes an update file.
func ReadFile(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, 1<<30))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	f, err := Unmarshal(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// WriteFile encodes f and writes it to path whole or not at all: a
// temporary file beside it, renamed over it.
func WriteFile(path string, f *File) error {
	data, err := Marshal(f)
	if err != nil {
		return err
	}
	return renameio.WriteFile(path, data, 0o644)
}

// Validate checks every index and size so that apply never trusts a bad file.
func (f *File) Validate() error {
	if !ValidID(f.ID) {
		return fmt.Errorf("bad update id %q (letters, digits, '.', '_', '-'; at most 64)", f.ID)
	}
	switch f.Kind {
	case KindProcess:
		if f.Kernel != nil {
			return errors.New("a process update has a kernel part")
		}
	case KindKernel:
		if f.Kernel == nil || len(f.Kernel.Module) == 0 || f.Kernel.Release == "" || !ValidID(f.Kernel.ModuleName) {
			return errors.New("kernel update without module, release or module name")
		}
	default:
		return fmt.Errorf("unknown update kind %q", f.Kind)
	}
	for _, r := range f.Requires {
		if !ValidID(r) || r == f.ID {
			return fmt.Errorf("bad required update id %q", r)
		}
	}
	if d := f.Debian; d != nil {
		if d.Source == "" || d.From == "" {
			return errors.New("debian: source and from are required")
		}
		for _, c := range d.CVEs {
			if !validCVE(c) {
				return fmt.Errorf("debian: bad CVE id %q", c)
			}
		}
	}
	for ti := range f.Targets {
		t := &f.Targets[ti]
		if t.Path == "" {
			return fmt.Errorf("target %d: empty path", ti)
		}
		for si, s := range t.Sections {
			switch s.Kind {
			case KindText, KindRodata, KindData:
				if uint64(len(s.Data)) != s.Size {
					return fmt.Errorf("target %s: section %d: size %d, data %d", t.Path, si, s.Size, len(s.Data))
				}
			case KindBss:
				if len(s.Data) != 0 {
					return fmt.Errorf("target %s: bss section %d has data", t.Path, si)
				}
			default:
				return fmt.Errorf("target %s: section %d: unknown kind %q", t.Path, si, s.Kind)
			}
			if s.Size > 1<<28 {
				return fmt.Errorf("target %s: section %d too large", t.Path, si)
			}
			if s.Align == 0 || s.Align&(s.Align-1) != 0 || s.Align > 4096 {
				return fmt.Errorf("target %s: section %d: bad alignment %d", t.Path, si, s.Align)
			}
			for _, d := range s.Defs {
				if d.Name == "" || d.Offset > s.Size {
					return fmt.Errorf("target %s: section %d: bad symbol definition %q", t.Path, si, d.Name)
				}
			}
			if err := t.checkRelocs(s.Relocs, s.Size); err != nil {
				return fmt.Errorf("target %s: section %s: %w", t.Path, s.Name, err)
			}
		}
		for yi, y := range t.Symbols {
			switch y.Kind {
			case SymAnon:
			case SymGlobal, SymLocal:
				if y.Name == "" {
					return fmt.Errorf("target %s: symbol %d has no name", t.Path, yi)
				}
			case SymSection:
				if y.Section < 0 || y.Section >= len(t.Sections) || y.Offset > t.Sections[y.Section].Size {
					return fmt.Errorf("target %s: symbol %d: bad section place", t.Path, yi)
				}
			default:
				return fmt.Errorf("target %s: symbol %d: unknown kind %q", t.Path, yi, y.Kind)
			}
		}
		if t.Symtab != nil {
			if t.Symtab.BuildID == "" {
				return fmt.Errorf("target %s: recovered symbol table without build-id", t.Path)
			}
			for _, y := range t.Symtab.Symbols {
				if y.Name == "" {
					return fmt.Errorf("target %s: recovered symbol table: a symbol has no name", t.Path)
				}
			}
		}
		for hi, h := range t.Hooks {
			if !slices.Contains(HookKinds, h.Kind) {
				return fmt.Errorf("target %s: hook %d: unknown kind %q", t.Path, hi, h.Kind)
			}
			if h.Symbol < 0 || h.Symbol >= len(t.Symbols) || t.Symbols[h.Symbol].Kind == SymAnon {
				return fmt.Errorf("target %s: hook %d (%s): bad symbol", t.Path, hi, h.Name)
			}
		}
		for _, fn := range t.Functions {
			if f.Kind == KindKernel && fn.Section == -1 && fn.Status == StatusReplaced {
				// the new code is in the module
			} else if fn.Section < 0 || fn.Section >= len(t.Sections) || t.Sections[fn.Section].Kind != KindText {
				return fmt.Errorf("target %s: function %s: bad code section", t.Path, fn.Name)
			}
			switch fn.Status {
			case StatusNew:
			case StatusReplaced:
				if fn.Pre == nil {
					return fmt.Errorf("target %s: replaced function %s has no pre code", t.Path, fn.Name)
				}
				if fn.Symbol < 0 || fn.Symbol >= len(t.Symbols) || t.Symbols[fn.Symbol].Kind == SymSection {
					return fmt.Errorf("target %s: function %s: bad symbol", t.Path, fn.Name)
				}
				if err := t.checkRelocs(fn.Pre.Relocs, uint64(len(fn.Pre.Data))); err != nil {
					return fmt.Errorf("target %s: pre code of %s: %w", t.Path, fn.Name, err)
				}
				if err := checkRodata(fn.Pre); err != nil {
					return fmt.Errorf("target %s: pre code of %s: %w", t.Path, fn.Name, err)
				}
			default:
				return fmt.Errorf("target %s: function %s: unknown status %q", t.Path, fn.Name, fn.Status)
			}
		}
	}
	return nil
}

// checkRodata checks that every datum hangs off one of the code's
// relocations and that its holes lie inside it.
func checkRodata(c *Code) error {
	for _, d := range c.Rodata {
		if !slices.ContainsFunc(c.Relocs, func(r Reloc) bool { return r.Offset == d.Reloc }) {
			return fmt.Errorf("read-only datum %q: no relocation at %#x", d.Name, d.Reloc)
		}
		if len(d.Data) == 0 || len(d.Data) > 1<<24 {
			return fmt.Errorf("read-only datum %q: bad size %d", d.Name, len(d.Data))
		}
		for _, h := range d.Holes {
			if h.Offset > uint64(len(d.Data)) || uint64(len(d.Data))-h.Offset < h.Size {
				return fmt.Errorf("read-only datum %q: hole at %#x outside it", d.Name, h.Offset)
			}
		}
	}
	return nil
}

func (t *Target) checkRelocs(rs []Reloc, size uint64) error {
	for _, r := range rs {
		if r.Symbol < 0 || r.Symbol >= len(t.Symbols) {
			return fmt.Errorf("relocation at %#x: bad symbol %d", r.Offset, r.Symbol)
		}
		w := RelocWidth(r.Type)
		if w == 0 {
			return fmt.Errorf("relocation at %#x: unsupported type %d", r.Offset, r.Type)
		}
		if r.Offset > size || size-r.Offset < uint64(w) {
			return fmt.Errorf("relocation at %#x outside the section", r.Offset)
		}
	}
	return nil
}

// ValidID reports whether id can name an update.
func ValidID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return id[0] != '.' && id[0] != '-'
}

// validCVE reports whether s is a CVE id: CVE-YYYY-NNNN (4 or more digits).
func validCVE(s string) bool {
	rest, ok := strings.CutPrefix(s, "CVE-")
	if !ok || len(rest) < 9 || rest[4] != '-' {
		return false
	}
	for i, c := range rest {
		if i != 4 && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}
