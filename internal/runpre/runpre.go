// Package runpre proves that the code running in a target is the code an
// update was built for (Ksplice's run-pre matching): each replaced
// function's pre code must equal the running code outside relocation
// fields, and every relocation read from the running code reveals where its
// target really lives, which pins down static and duplicate-named symbols.
package runpre

import (
	"errors"
	"fmt"

	"livesplice/internal/amd64"
	"livesplice/internal/update"
)

// ErrMismatch is wrapped when running code is not the update's pre code.
var ErrMismatch = errors.New("running code does not match the update's pre code")

// ErrAmbiguous is wrapped when more than one place matches.
var ErrAmbiguous = errors.New("more than one running function matches")

// ErrNotFound is wrapped when the running program has no such function.
var ErrNotFound = errors.New("function not found in the running program")

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
		var firstErr error
		for _, c := range cands {
			if d, size, ok := f.Follow(c.Addr); ok {
				c = Candidate{Addr: d, Size: size}
			}
			learned, err := matchOne(t, fn.Pre, c, mem, res.Learned, learn)
			if err != nil {
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
	for _, r := range pre.Relocs {
		w := uint64(update.RelocWidth(r.Type))
		s, rewritten, err := amd64.Observe(pre.Data, run, r.Offset, r.Type, c.Addr+r.Offset, r.Addend, mem)
		if err != nil {
			return nil, fmt.Errorf("at %#x+%#x: %w", c.Addr, r.Offset, err)
		}
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
	return learned, nil
}

// MatchCode compares code with the code at c outside its relocation fields,
// as Match does for a replaced function, and returns the address each
// relocation field holds (by symbol index of t). create --deb uses it to
// prove where a plain build's code lies in a stripped file (docs/deb.md).
func MatchCode(t *update.Target, code *update.Code, c Candidate, mem amd64.Memory) (map[int]uint64, error) {
	return matchOne(t, code, c, mem, nil, func(int) bool { return true })
}
