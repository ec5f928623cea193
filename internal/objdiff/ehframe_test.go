package objdiff

import (
	"debug/elf"
	"encoding/binary"
	"testing"

	"livesplice/internal/update"
)

// The carried code's call frame information comes along: one CIE, one FDE
// per carried function, each FDE's pc_begin relocated against the carried
// code, and nothing for the unchanged function.
func TestFramesCarried(t *testing.T) {
	pre := compile(t, "int f(int x){return x+1;} int g(int x){return x*2;} int k(int x){return x-3;}", "-O2")
	post := compile(t, "int f(int x){return x+2;} int g(int x){return x*5;} int k(int x){return x-3;}", "-O2")
	b := NewBuilder("prog", "", "")
	if err := b.AddObject("x.o", pre, post); err != nil {
		t.Fatal(err)
	}
	tg := b.Target()
	var eh *update.Section
	for i := range tg.Sections {
		if tg.Sections[i].Name == update.EHFrameName {
			eh = &tg.Sections[i]
		}
	}
	if eh == nil {
		t.Fatal("no .eh_frame section carried")
	}
	var cies, fdes int
	for off := uint64(0); ; {
		n := uint64(binary.LittleEndian.Uint32(eh.Data[off:]))
		if n == 0 {
			if off+4 != eh.Size {
				t.Fatalf("terminator at %d of %d", off, eh.Size)
			}
			break
		}
		if id := binary.LittleEndian.Uint32(eh.Data[off+4:]); id == 0 {
			cies++
		} else {
			fdes++
			if off+4-uint64(id) != 0 {
				t.Errorf("FDE at %d points at %d, not the CIE", off, off+4-uint64(id))
			}
		}
		off += 4 + n
	}
	if cies != 1 || fdes != 2 {
		t.Fatalf("%d CIEs, %d FDEs; want 1 and 2", cies, fdes)
	}
	text := map[int]bool{}
	for _, fn := range tg.Functions {
		text[fn.Section] = true
	}
	pcs := 0
	for _, r := range eh.Relocs {
		y := tg.Symbols[r.Symbol]
		if elf.R_X86_64(r.Type) == elf.R_X86_64_PC32 && y.Kind == update.SymSection && text[y.Section] {
			pcs++
		}
	}
	if pcs != 2 {
		t.Fatalf("%d pc_begin relocations against the new code, want 2: %+v", pcs, eh.Relocs)
	}
}
