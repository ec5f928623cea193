package runpre

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"livesplice/internal/update"
)

// fakeMem is a process image made of a few code blobs.
type fakeMem map[uint64][]byte

func (m fakeMem) ReadMem(addr uint64, b []byte) error {
	for base, code := range m {
		if addr >= base && addr+uint64(len(b)) <= base+uint64(len(code)) {
			copy(b, code[addr-base:])
			return nil
		}
	}
	return fmt.Errorf("unmapped %#x", addr)
}

type fakeFinder struct {
	cands  map[string][]Candidate
	follow map[uint64]Candidate
}

func (f fakeFinder) Candidates(y update.Symbol) ([]Candidate, error) { return f.cands[y.Name], nil }
func (f fakeFinder) Follow(addr uint64) (uint64, uint64, bool) {
	c, ok := f.follow[addr]
	return c.Addr, c.Size, ok
}

// call builds "call rel32; ret" at base calling to.
func call(base, to uint64) []byte {
	b := []byte{0xe8, 0, 0, 0, 0, 0xc3}
	binary.LittleEndian.PutUint32(b[1:], uint32(int32(int64(to)-int64(base+5))))
	return b
}

func target() *update.Target {
	return &update.Target{
		Path: "prog",
		Symbols: []update.Symbol{
			{Kind: update.SymGlobal, Name: "f"},
			{Kind: update.SymLocal, Name: "helper", File: "a.c"},
		},
		Functions: []update.Function{{Name: "f", Status: update.StatusReplaced, Symbol: 0,
			Pre: &update.Code{Data: []byte{0xe8, 0, 0, 0, 0, 0xc3},
				Relocs: []update.Reloc{{Offset: 1, Type: 4, Symbol: 1, Addend: -4}}}}},
	}
}

func TestMatchLearnsStatics(t *testing.T) {
	// Two functions called f; only the one at 0x1000 matches (the other's
	// code differs), and its call reveals where the static helper is.
	m := fakeMem{0x1000: call(0x1000, 0x3000), 0x2000: {0x90, 0x90, 0x90, 0x90, 0x90, 0x90}}
	f := fakeFinder{cands: map[string][]Candidate{"f": {{0x1000, 6}, {0x2000, 6}}}}
	res, err := Match(target(), m, f)
	if err != nil {
		t.Fatal(err)
	}
	if res.Funcs[0].Addr != 0x1000 || res.Learned[1] != 0x3000 {
		t.Fatalf("got %+v", res)
	}
}

func TestMismatchAndAmbiguity(t *testing.T) {
	m := fakeMem{0x1000: {0x55, 0, 0, 0, 0, 0xc3}}
	f := fakeFinder{cands: map[string][]Candidate{"f": {{0x1000, 6}}}}
	if _, err := Match(target(), m, f); !errors.Is(err, ErrMismatch) {
		t.Fatalf("changed code: %v", err)
	}
	f = fakeFinder{cands: map[string][]Candidate{"f": {{0x1000, 7}}}}
	if _, err := Match(target(), fakeMem{0x1000: append(call(0x1000, 0x3000), 0)}, f); !errors.Is(err, ErrMismatch) {
		t.Fatalf("other size: %v", err)
	}
	m = fakeMem{0x1000: call(0x1000, 0x3000), 0x2000: call(0x2000, 0x4000)}
	f = fakeFinder{cands: map[string][]Candidate{"f": {{0x1000, 6}, {0x2000, 6}}}}
	if _, err := Match(target(), m, f); !errors.Is(err, ErrAmbiguous) {
		t.Fatalf("two matches: %v", err)
	}
	if _, err := Match(target(), m, fakeFinder{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("no candidate: %v", err)
	}
}

func TestFollowsEarlierUpdate(t *testing.T) {
	// f at 0x1000 holds an earlier update's jump to its copy at 0x9000.
	m := fakeMem{0x1000: {0xe9, 0, 0, 0, 0, 0}, 0x9000: call(0x9000, 0x3000)}
	f := fakeFinder{cands: map[string][]Candidate{"f": {{0x1000, 6}}}, follow: map[uint64]Candidate{0x1000: {0x9000, 6}}}
	res, err := Match(target(), m, f)
	if err != nil || res.Funcs[0].Addr != 0x9000 {
		t.Fatalf("got %+v, %v", res, err)
	}
}

// binderFinder also says which globals the target object binds to itself.
type binderFinder struct {
	fakeFinder
	local map[string]bool
}

func (f binderFinder) BoundLocally(y update.Symbol) bool { return f.local[y.Name] }

func TestLearnsHiddenGlobals(t *testing.T) {
	// f calls a global g: learned (and checked) only when the finder says
	// the object binds g to itself (hidden), else found by name at apply.
	tg := target()
	tg.Symbols[1] = update.Symbol{Kind: update.SymGlobal, Name: "g"}
	m := fakeMem{0x1000: call(0x1000, 0x3000)}
	ff := fakeFinder{cands: map[string][]Candidate{"f": {{0x1000, 6}}}}
	res, err := Match(tg, m, ff)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.Learned[1]; ok {
		t.Fatalf("a global learned without a binder: %+v", res.Learned)
	}
	res, err = Match(tg, m, binderFinder{ff, map[string]bool{"g": true}})
	if err != nil || res.Learned[1] != 0x3000 {
		t.Fatalf("hidden g: got %+v, %v", res, err)
	}
}

func TestMatchCode(t *testing.T) {
	// A section's code matched at 0x1000 outside its relocation field,
	// which says where the call leads; other code does not match.
	tg := target()
	m := fakeMem{0x1000: call(0x1000, 0x3000), 0x2000: {0x55, 0, 0, 0, 0, 0xc3}}
	learned, err := MatchCode(tg, tg.Functions[0].Pre, Candidate{0x1000, 6}, m)
	if err != nil || learned[1] != 0x3000 {
		t.Fatalf("got %v, %v", learned, err)
	}
	if _, err := MatchCode(tg, tg.Functions[0].Pre, Candidate{0x2000, 6}, m); err == nil {
		t.Fatal("other code matched")
	}
}

// lea rel32(%rip), %rdi; ret at base, pointing at to.
func lea(base, to uint64) []byte {
	b := []byte{0x48, 0x8d, 0x3d, 0, 0, 0, 0, 0xc3}
	binary.LittleEndian.PutUint32(b[3:], uint32(int32(int64(to)-int64(base+7))))
	return b
}

// The read-only data pre code reaches is compared too: a string the
// running program has in another spelling refuses, naming the function and
// the string; a relocation field inside a datum (a hole) is not compared.
func TestMatchRodata(t *testing.T) {
	tg := &update.Target{
		Path:    "prog",
		Symbols: []update.Symbol{{Kind: update.SymGlobal, Name: "f"}, {Kind: update.SymAnon, Name: ".rodata"}},
		Functions: []update.Function{{Name: "f", Status: update.StatusReplaced, Symbol: 0,
			Pre: &update.Code{Data: []byte{0x48, 0x8d, 0x3d, 0, 0, 0, 0, 0xc3},
				// .rodata+0x10-4: the string starts at S+A+4
				Relocs: []update.Reloc{{Offset: 3, Type: 2, Symbol: 1, Addend: 0x10 - 4}},
				Rodata: []update.Datum{{Reloc: 3, At: 4, Name: `string "value is %d\n"`, Data: []byte("value is %d\n\x00"),
					Holes: []update.Hole{{Offset: 2, Size: 2}}}}}}},
	}
	f := fakeFinder{cands: map[string][]Candidate{"f": {{0x1000, 8}}}}
	for _, c := range []struct {
		str  string
		want error
	}{
		{"value is %d\n\x00", nil},
		{"vaXXe is %d\n\x00", nil}, // in the hole
		{"VALUE IS %d\n\x00", ErrDataMismatch},
		{"value is %d\nX", ErrDataMismatch},
	} {
		m := fakeMem{0x1000: lea(0x1000, 0x5000), 0x5000: []byte(c.str)}
		_, err := Match(tg, m, f)
		if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Fatalf("%q: got %v, want %v", c.str, err, c.want)
		}
		if err != nil && (!strings.Contains(err.Error(), "run-pre match f:") || !strings.Contains(err.Error(), `string "value is %d\n"`)) {
			t.Fatalf("refusal does not name function and datum: %v", err)
		}
	}
}
