package update

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func sample() *File {
	return &File{ID: "fix-1", Kind: "process", Patch: "00", Targets: []Target{{
		Path: "prog",
		Sections: []Section{
			{Name: ".text.f", Kind: KindText, Align: 16, Size: 8, Data: []byte{0xe8, 0, 0, 0, 0, 0x90, 0x90, 0xc3},
				Relocs: []Reloc{{Offset: 1, Type: 4, Symbol: 1, Addend: -4}}},
			{Name: ".bss.n", Kind: KindBss, Align: 4, Size: 4},
		},
		Symbols: []Symbol{{Kind: SymSection, Section: 0}, {Kind: SymGlobal, Name: "puts"}},
		Functions: []Function{{Name: "f", Status: StatusReplaced, Symbol: 1, Section: 0, Size: 8,
			Pre: &Code{Data: []byte{0xc3}}}},
	}}}
}

func TestRoundTripDeterministic(t *testing.T) {
	a, err := Marshal(sample())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Marshal(sample())
	if !bytes.Equal(a, b) {
		t.Fatal("two encodings of the same update differ")
	}
	f, err := Unmarshal(a)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := Marshal(f)
	if !bytes.Equal(a, c) {
		t.Fatal("decode+encode changed the file")
	}
}

func TestRefusesDamage(t *testing.T) {
	good, _ := Marshal(sample())
	flip := append([]byte{}, good...)
	flip[len(flip)-10] ^= 1
	badIdx := sample()
	badIdx.Targets[0].Sections[0].Relocs[0].Symbol = 9
	cases := map[string][]byte{
		"flipped byte": flip,
		"truncated":    good[:len(good)/2],
		"no header":    []byte("{}"),
		"bad magic":    bytes.Replace(good, []byte(Magic), []byte("livesplice-updatX"), 1),
		"empty":        nil,
	}
	for name, data := range cases {
		if _, err := Unmarshal(data); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", name, err)
		}
	}
	if _, err := Marshal(badIdx); err == nil || !strings.Contains(err.Error(), "bad symbol") {
		t.Errorf("bad index: got %v", err)
	}
	future := bytes.Replace(good, []byte(Magic+" 2 "), []byte(Magic+" 3 "), 1)
	if _, err := Unmarshal(future); err == nil || !strings.Contains(err.Error(), "version 3 not supported") {
		t.Errorf("future version: got %v", err)
	}
}

// withHeader re-seals a body under a header of version v.
func withHeader(v int, body []byte) []byte {
	sum := sha256.Sum256(body)
	return append([]byte(fmt.Sprintf("%s %d sha256=%s\n", Magic, v, hex.EncodeToString(sum[:]))), body...)
}

// A version 1 file (no rodata, no why) is still read.
func TestReadsVersion1(t *testing.T) {
	good, _ := Marshal(sample())
	body := good[bytes.IndexByte(good, '\n')+1:]
	body = bytes.Replace(body, []byte(`"format": 2`), []byte(`"format": 1`), 1)
	f, err := Unmarshal(withHeader(1, body))
	if err != nil || f.Format != 1 {
		t.Fatalf("version 1: %v", err)
	}
}

// A pre datum must hang off a relocation of its code, holes inside it.
func TestRodataValidated(t *testing.T) {
	for name, d := range map[string]Datum{
		"no relocation": {Reloc: 99, Name: "x", Data: []byte("a\x00")},
		"hole outside":  {Reloc: 0, Name: "x", Data: []byte("a\x00"), Holes: []Hole{{Offset: 1, Size: 4}}},
		"empty":         {Reloc: 0, Name: "x"},
	} {
		f := sample()
		for i := range f.Targets[0].Functions {
			if fn := &f.Targets[0].Functions[i]; fn.Pre != nil {
				fn.Pre.Data = make([]byte, 8)
				fn.Pre.Relocs = []Reloc{{Offset: 0, Type: 2, Symbol: 0}}
				fn.Pre.Rodata = []Datum{d}
			}
		}
		if _, err := Marshal(f); err == nil || !strings.Contains(err.Error(), "read-only datum") {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{"fix": true, "CVE-2024-1.2_a": true, "": false, "-x": false, ".x": false, "a/b": false, "a b": false, strings.Repeat("a", 65): false} {
		if ValidID(id) != want {
			t.Errorf("ValidID(%q) = %v", id, !want)
		}
	}
}

// FuzzUnmarshal: no input makes the reader panic; whatever it accepts
// re-encodes to a file it accepts again.
func FuzzUnmarshal(f *testing.F) {
	good, _ := Marshal(sample())
	f.Add(good)
	f.Add([]byte(Magic + " 1 sha256=00\n{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		u, err := Unmarshal(data)
		if err != nil {
			return
		}
		again, err := Marshal(u)
		if err != nil {
			t.Fatalf("accepted file does not re-encode: %v", err)
		}
		if _, err := Unmarshal(again); err != nil {
			t.Fatalf("re-encoded file refused: %v", err)
		}
	})
}

func TestHooks(t *testing.T) {
	f := sample()
	f.Targets[0].Hooks = []Hook{{Kind: HookPreApply, Name: "ready", Symbol: 0}, {Kind: HookPostUndo, Name: "puts", Symbol: 1}}
	data, err := Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	g, err := Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Targets[0].Hooks) != 2 || g.Targets[0].Hooks[1].Kind != HookPostUndo {
		t.Fatalf("hooks lost: %+v", g.Targets[0].Hooks)
	}
	for name, h := range map[string]Hook{
		"unknown kind":     {Kind: "before", Name: "x", Symbol: 0},
		"symbol too large": {Kind: HookApply, Name: "x", Symbol: 2},
		"negative symbol":  {Kind: HookApply, Name: "x", Symbol: -1},
	} {
		f := sample()
		f.Targets[0].Hooks = []Hook{h}
		if _, err := Marshal(f); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	f = sample()
	f.Targets[0].Symbols = append(f.Targets[0].Symbols, Symbol{Kind: SymAnon, Name: ".rodata"})
	f.Targets[0].Hooks = []Hook{{Kind: HookApply, Name: "x", Symbol: 2}}
	if _, err := Marshal(f); err == nil {
		t.Error("hook at pre-only data accepted")
	}
	for _, k := range HookKinds {
		want := strings.HasPrefix(k, "pre_") || strings.HasPrefix(k, "check_")
		if HookVetoes(k) != want {
			t.Errorf("HookVetoes(%s) = %v", k, !want)
		}
	}
}
