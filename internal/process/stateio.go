package process

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"

	"livesplice/internal/procfs"
	"livesplice/internal/state"
)

// memReader reads target memory.
type memReader interface {
	ReadMem(addr uint64, b []byte) error
}

// stateMapping finds the state record's mapping.
func stateMapping(maps []procfs.Mapping) (procfs.Mapping, bool) {
	want := state.MappingPath
	for _, m := range maps {
		if m.Path == want {
			return m, true
		}
	}
	return procfs.Mapping{}, false
}

// readState reads the record kept in the target; an empty record if none.
// It returns the mapping's address and the slot the current body is in.
func readState(mem memReader, maps []procfs.Mapping) (*state.Record, uint64, int, error) {
	m, ok := stateMapping(maps)
	if !ok {
		return &state.Record{}, 0, 1, nil
	}
	if m.End-m.Start < state.Size {
		return nil, 0, 0, fmt.Errorf("%w: mapping of %d bytes", state.ErrCorrupt, m.End-m.Start)
	}
	h := make([]byte, state.HeaderSize)
	if err := mem.ReadMem(m.Start, h); err != nil {
		return nil, 0, 0, fmt.Errorf("read state record: %w", err)
	}
	off, n, err := state.DecodeHeader(h)
	if err != nil {
		return nil, 0, 0, err
	}
	body := make([]byte, n)
	if n > 0 {
		if err := mem.ReadMem(m.Start+off, body); err != nil {
			return nil, 0, 0, fmt.Errorf("read state record: %w", err)
		}
	}
	r, err := state.DecodeBody(body)
	return r, m.Start, state.Slot(off), err
}

// procMem reads another process's memory without stopping it.
type procMem struct{ f *os.File }

func (p procMem) ReadMem(addr uint64, b []byte) error {
	if addr > math.MaxInt64 {
		return fmt.Errorf("read at %#x: address out of range", addr)
	}
	n, err := p.f.ReadAt(b, int64(addr))
	if n == len(b) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("short read at %#x", addr)
}

// Shown is one update as show reports it: the record, and what the
// program really runs according to the update's commit flags.
type Shown struct {
	state.Applied
	Running string `json:"running"` // "new", "old", or "mixed" (objects of one update flipped apart)
}

// Show returns the updates applied to a process, oldest first, read from
// the record inside it, each with what its commit flags say the program
// runs. The process is not stopped.
func Show(pid int) ([]Shown, error) {
	rec, mem, err := show(pid)
	if err != nil {
		return nil, err
	}
	defer mem.f.Close()
	out := []Shown{}
	for _, a := range rec.Updates {
		set, total := flags(mem, a)
		running := "mixed"
		switch set {
		case total:
			running = "new"
		case 0:
			running = "old"
		}
		out = append(out, Shown{Applied: a, Running: running})
	}
	return out, nil
}

func show(pid int) (*state.Record, procMem, error) {
	// Another user's process: a permission problem (exit 7), not an I/O
	// error.
	denied := func(err error) error {
		if errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("process %d: %w to read it: %w", pid, ErrNotPermitted, err)
		}
		return fmt.Errorf("process %d: %w", pid, err)
	}
	maps, err := procfs.ReadMaps(pid)
	if err != nil {
		return nil, procMem{}, denied(err)
	}
	f, err := os.Open(procfs.Dir(pid) + "/mem") // a zombie leader has no memory
	if err != nil {
		return nil, procMem{}, denied(err)
	}
	r, _, _, err := readState(procMem{f}, maps)
	if err != nil {
		f.Close()
		return nil, procMem{}, fmt.Errorf("process %d: %w", pid, err)
	}
	return r, procMem{f}, nil
}
