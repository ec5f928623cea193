package symfile

import (
	"bytes"
	"debug/elf"
	"testing"
)

func TestWriteReadsBack(t *testing.T) {
	frame := []byte{1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0}
	b, err := Write(&File{TextAddr: 0x7f0000001000, TextSize: 0x200, FrameAddr: 0x7f0000002000, Frame: frame,
		Syms: []Sym{{Name: "price", Addr: 0x7f0000001000, Size: 0x40, Func: true}, {Name: "table", Addr: 0x7f0000003000, Size: 8}}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != elf.ET_EXEC || f.Machine != elf.EM_X86_64 {
		t.Fatalf("type %v machine %v", f.Type, f.Machine)
	}
	text := f.Section(".text")
	if text == nil || text.Addr != 0x7f0000001000 || text.Size != 0x200 {
		t.Fatalf(".text: %+v", text)
	}
	eh := f.Section(".eh_frame")
	if eh == nil || eh.Addr != 0x7f0000002000 {
		t.Fatalf(".eh_frame: %+v", eh)
	}
	if data, err := eh.Data(); err != nil || !bytes.Equal(data, frame) {
		t.Fatalf(".eh_frame data %v %v", data, err)
	}
	syms, err := f.Symbols()
	if err != nil || len(syms) != 2 {
		t.Fatalf("symbols %v %v", syms, err)
	}
	if s := syms[0]; s.Name != "price" || s.Value != 0x7f0000001000 || elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Section != 1 {
		t.Fatalf("price: %+v", s)
	}
	if s := syms[1]; s.Name != "table" || s.Section != elf.SHN_ABS {
		t.Fatalf("table: %+v", s)
	}
	if _, err := Write(&File{}); err == nil {
		t.Fatal("a file without code was written")
	}
}
