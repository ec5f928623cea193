package elfsym

import (
	"debug/elf"
	"os"
	"os/exec"
	"slices"
	"testing"
)

// A stripped file given its symbols back finds its static function by
// file and name, and Room stops at the next recovered function.
func TestWithSymbols(t *testing.T) {
	full := build(t)
	stripped := full + ".stripped"
	if out, err := exec.Command("strip", "--strip-all", "-o", stripped, full).CombinedOutput(); err != nil {
		t.Fatalf("strip: %v %s", err, out)
	}
	load := func(p string) *Table {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		tab, err := Load(f)
		if err != nil {
			t.Fatal(err)
		}
		return tab
	}
	orig, st := load(full), load(stripped)
	if !st.Stripped || len(st.Local("p.c", "helper")) != 0 || st.Room(orig.Local("p.c", "helper")[0].Value) != 0 {
		t.Fatalf("stripped file still knows helper")
	}
	syms := slices.Concat(orig.Local("p.c", "helper"), orig.Global("visible"))
	rec := st.WithSymbols(syms)
	h := rec.Local("p.c", "helper")
	if rec.Stripped || len(h) != 1 || h[0].Type != elf.STT_FUNC || len(rec.Local("", "helper")) != 1 {
		t.Fatalf("recovered helper: %+v", h)
	}
	v := rec.Global("visible")
	if len(v) == 0 || v[0].Value != orig.Global("visible")[0].Value {
		t.Fatalf("recovered visible: %+v", v)
	}
	room := rec.Room(h[0].Value)
	if room == 0 || (v[0].Value > h[0].Value && room > v[0].Value-h[0].Value) {
		t.Fatalf("room after helper: %d (visible at %#x, helper at %#x)", room, v[0].Value, h[0].Value)
	}
	if len(st.Local("p.c", "helper")) != 0 {
		t.Fatalf("WithSymbols changed the original table")
	}
}
