package elfsym

import (
	"debug/elf"
	"testing"
)

func TestBefore(t *testing.T) {
	base := &Table{code: [][2]uint64{{0x1000, 0x2000}}, locals: map[string][]Sym{}, globals: map[string][]Sym{}}
	tab := base.WithSymbols([]Sym{
		{Name: "a", Value: 0x1000, Size: 0x10, Type: elf.STT_FUNC},
		{Name: "crt", Value: 0x1020, Size: 0, Type: elf.STT_FUNC},
		{Name: "b", Value: 0x1030, Size: 3, Type: elf.STT_FUNC},
		{Name: "big", Value: 0x1040, Size: 0x40, Type: elf.STT_FUNC},
		{Name: "inner", Value: 0x1050, Size: 0, Type: elf.STT_FUNC},
	})
	cases := []struct {
		v          uint64
		start, end uint64
		ok         bool
	}{
		{0x1020, 0x1000, 0x1010, true}, // after a sized symbol
		{0x1030, 0x1020, 0x1020, true}, // after a symbol of size 0
		{0x1040, 0x1030, 0x1033, true},
		{0x1060, 0, 0, false}, // inside big
		{0x1000, 0, 0, false}, // nothing before it in its section
		{0x3000, 0, 0, false}, // outside code
	}
	for _, c := range cases {
		start, end, ok := tab.Before(c.v)
		if ok != c.ok || (ok && (start != c.start || end != c.end)) {
			t.Errorf("Before(%#x) = %#x, %#x, %v; want %#x, %#x, %v", c.v, start, end, ok, c.start, c.end, c.ok)
		}
	}
	if start, end, ok := tab.Before(0x1090); !ok || start != 0x1050 || end != 0x1080 {
		t.Errorf("Before(0x1090) = %#x, %#x, %v; want the last start, 0x1050 (a label inside big), and big's end", start, end, ok)
	}
	stripped := &Table{Stripped: true, code: base.code}
	if _, _, ok := stripped.Before(0x1020); ok {
		t.Error("Before on a stripped table")
	}
}
