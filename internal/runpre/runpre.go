// Package runpre proves that the code running in a target is the code an
// update was built for (Ksplice's run-pre matching): each replaced
// function's pre code must equal the running code outside relocation
// fields, and every relocation read from the running code reveals where its
// target really lives, which pins down static and duplicate-named symbols.
package runpre

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	"livesplice/internal/amd64"
	tgt "livesplice/internal/target"
	"livesplice/internal/update"
)

// The refusals are kinds of internal/target's ErrMismatch (imported as tgt:
// the tests use the name target).

// ErrMismatch is wrapped when running code is not the update's pre code.
var ErrMismatch = tgt.Mark(tgt.ErrMismatch, "running code does not match the update's pre code")

// ErrAmbiguous is wrapped when more than one place matches.
var ErrAmbiguous = tgt.Mark(tgt.ErrMismatch, "more than one running function matches")

// ErrDataMismatch is wrapped when the running code matches but read-only
// data it uses (a string literal, a constant table) is not the pre
// build's: the running program was built from another source.
// It wraps ErrMismatch: the data is part of the code's source.
var ErrDataMismatch = fmt.Errorf("%w: read-only data it uses differs", ErrMismatch)

// ErrNotFound is wrapped when the running program has no such function.
var ErrNotFound = tgt.Mark(tgt.ErrMismatch, "function not found in the running program")

// Candidate is a place where a function may run.
type Candidate struct {
	Addr, Size uint64
}

// Finder is what the target backend offers the matcher.
type Finder interface {
	// Candidates lists the running places of a symbol of the target object.
	Candidates(y update.Symbol) ([]Candidate, error)
	// Follow returns the destination of a trampoline an earlier update
	// wrote at addr, so that a stacked update matches the earlier code.
	Follow(addr uint64) (dest uint64, size uint64, ok bool)
}

// LocalBinder is implemented by a Finder that knows which global symbols
// of the update the target object binds to itself (a hidden symbol, which
// the linker made local to the file): what matching reads for those is
// learned and checked like a static's.
type LocalBinder interface {
	BoundLocally(y update.Symbol) bool
}

// Func is where one replaced function runs.
type Func struct {
	Addr uint64 // where the matched code starts: the jump goes here
	Size uint64 // size of the running code
}

// Result is what matching learned.
type Result struct {
	Funcs   []Func         // parallel to Target.Functions; zero for new ones
	Learned map[int]uint64 // symbol index -> running address
}

// Match runs run-pre matching for every replaced function of t.
func Match(t *update.Target, mem amd64.Memory, f Finder) (*Result, error) {
	res := &Result{Funcs: make([]Func, len(t.Functions)), Learned: map[int]uint64{}}
	learn := learns(t, f)
	for i, fn := range t.Functions {
		if fn.Status != update.StatusReplaced {
			continue
		}
		y := t.Symbols[fn.Symbol]
		cands, err := f.Candidates(y)
		if err != nil {
			return nil, fmt.Errorf("run-pre match %s: %w", fn.Name, err)
		}
		if len(cands) == 0 {
			return nil, fmt.Errorf("run-pre match %s: %w", fn.Name, ErrNotFound)
		}
		var found []Func
		var foundLearned map[int]uint64
		var firstErr, dataErr error
		for _, c := range cands {
			if d, size, ok := f.Follow(c.Addr); ok {
				c = Candidate{Addr: d, Size: size}
			}
			learned, err := matchOne(t, fn.Pre, c, mem, res.Learned, learn)
			if err != nil {
				if errors.Is(err, ErrDataMismatch) && dataErr == nil {
					dataErr = err // the code matched: say what differs
				}
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			dup := false
			for _, g := range found {
				dup = dup || g.Addr == c.Addr
			}
			if !dup {
				found = append(found, Func(c))
				foundLearned = learned
			}
		}
		switch len(found) {
		case 0:
			if dataErr != nil {
				return nil, fmt.Errorf("run-pre match %s: %w", fn.Name, dataErr)
			}
			return nil, fmt.Errorf("run-pre match %s: %w: %v", fn.Name, ErrMismatch, firstErr)
		case 1:
		default:
			return nil, fmt.Errorf("run-pre match %s: %w (%d places)", fn.Name, ErrAmbiguous, len(found))
		}
		res.Funcs[i] = found[0]
		for k, v := range foundLearned {
			res.Learned[k] = v
		}
	}
	return res, nil
}

// learns returns which symbols of t matching learns the address of:
// statics, thread-local variables, and globals the finder says the target
// object binds to itself. Other globals are found by name (their running
// references may go through a PLT stub or a GOT slot).
func learns(t *update.Target, f Finder) func(int) bool {
	lb, _ := f.(LocalBinder)
	memo := map[int]bool{}
	return func(i int) bool {
		y := t.Symbols[i]
		if y.Kind == update.SymLocal || y.IsTLS() {
			return true
		}
		if y.Kind != update.SymGlobal || lb == nil {
			return false
		}
		v, ok := memo[i]
		if !ok {
			v = lb.BoundLocally(y)
			memo[i] = v
		}
		return v
	}
}

// matchOne compares pre code with the running code at c and returns the
// addresses it reveals of the symbols learn selects, checked against what
// is already known.
func matchOne(t *update.Target, pre *update.Code, c Candidate, mem amd64.Memory, known map[int]uint64, learn func(int) bool) (map[int]uint64, error) {
	n := uint64(len(pre.Data))
	if c.Size != 0 && c.Size != n {
		return nil, fmt.Errorf("at %#x: running size %d, pre size %d", c.Addr, c.Size, n)
	}
	run := make([]byte, n)
	if err := mem.ReadMem(c.Addr, run); err != nil {
		return nil, fmt.Errorf("at %#x: read: %w", c.Addr, err)
	}
	skip := make([]bool, n)
	learned := map[int]uint64{}
	reach := map[uint64]uint64{} // relocation offset -> S + A, S read from the running code
	for _, r := range pre.Relocs {
		w := uint64(update.RelocWidth(r.Type))
		s, rewritten, err := amd64.Observe(pre.Data, run, r.Offset, r.Type, c.Addr+r.Offset, r.Addend, mem)
		if err != nil {
			return nil, fmt.Errorf("at %#x+%#x: %w", c.Addr, r.Offset, err)
		}
		reach[r.Offset] = uint64(int64(s) + r.Addend)
		for i := r.Offset - uint64(rewritten); i < r.Offset+w; i++ {
			skip[i] = true
		}
		y := t.Symbols[r.Symbol]
		if !learn(r.Symbol) {
			continue // globals are found by name; anonymous data needs no address
		}
		if v, ok := known[r.Symbol]; ok && v != s {
			return nil, fmt.Errorf("at %#x+%#x: %s is at %#x here but at %#x elsewhere", c.Addr, r.Offset, y.Name, s, v)
		}
		if v, ok := learned[r.Symbol]; ok && v != s {
			return nil, fmt.Errorf("at %#x+%#x: %s seen at %#x and %#x", c.Addr, r.Offset, y.Name, s, v)
		}
		learned[r.Symbol] = s
	}
	for i := uint64(0); i < n; i++ {
		if !skip[i] && run[i] != pre.Data[i] {
			return nil, fmt.Errorf("at %#x: code differs at offset +%#x (running %#02x, expected %#02x)", c.Addr, i, run[i], pre.Data[i])
		}
	}
	if err := matchRodata(pre, reach, mem); err != nil {
		return nil, err
	}
	return learned, nil
}

// MatchCode compares code with the code at c outside its relocation fields,
// as Match does for a replaced function, and returns the address each
// relocation field holds (by symbol index of t). create --deb uses it to
// prove where a plain build's code lies in a stripped file (docs/deb.md).
func MatchCode(t *update.Target, code *update.Code, c Candidate, mem amd64.Memory) (map[int]uint64, error) {
	return matchOne(t, code, c, mem, nil, func(int) bool { return true })
}

// matchRodata compares every read-only datum the pre code reaches with the
// running program's bytes where the running code's relocation points:
// string literals, constants and tables are part of the source the update
// was built from (a string compares up to its NUL, so the linker's merging
// of strings does not matter; relocation fields inside, as in jump tables,
// are skipped).
func matchRodata(pre *update.Code, reach map[uint64]uint64, mem amd64.Memory) error {
	for _, d := range pre.Rodata {
		sa, ok := reach[d.Reloc]
		if !ok {
			return fmt.Errorf("read-only datum %s: no relocation at +%#x", d.Name, d.Reloc)
		}
		addr := uint64(int64(sa) + d.At)
		run := make([]byte, len(d.Data))
		if err := mem.ReadMem(addr, run); err != nil {
			return fmt.Errorf("%w: %s at %#x: read: %v", ErrDataMismatch, d.Name, addr, err)
		}
		skip := make([]bool, len(run))
		for _, h := range d.Holes {
			for i := h.Offset; i < h.Offset+h.Size && i < uint64(len(skip)); i++ {
				skip[i] = true
			}
		}
		for i := range run {
			if !skip[i] && run[i] != d.Data[i] {
				return fmt.Errorf("%w: %s at %#x differs at +%d (running %s); the update was built from another source than the running program's", ErrDataMismatch, d.Name, addr, i, describe(run, d.Data))
			}
		}
	}
	return nil
}

// describe shows the running bytes of a datum: quoted up to the NUL when
// the pre datum is a string, else in hex (at most 32 bytes).
func describe(run, pre []byte) string {
	if len(pre) > 0 && pre[len(pre)-1] == 0 {
		if i := bytes.IndexByte(run, 0); i >= 0 {
			run = run[:i]
		}
		if len(run) > 48 {
			run = run[:48]
		}
		return strconv.Quote(string(run))
	}
	if len(run) > 32 {
		run = run[:32]
	}
	return fmt.Sprintf("% x", run)
}
