// Package symfile writes ELF symbol files for code livesplice placed in a
// running process: the addresses of its sections, its function symbols and
// its call frame information. A debugger loads them (gdb: add-symbol-file)
// to name and unwind through patched code, which no mapped file describes.
package symfile

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
)

// Sym is a symbol of the file.
type Sym struct {
	Name string
	Addr uint64
	Size uint64
	Func bool
}

// File describes one symbol file: the code's address range, the symbols in
// it, and one .eh_frame (its bytes as they lie in memory at FrameAddr).
type File struct {
	TextAddr, TextSize uint64
	FrameAddr          uint64
	Frame              []byte // may be empty
	Syms               []Sym
}

// Write encodes f as an ELF64 x86-64 ET_EXEC file whose sections carry
// their running addresses, so that no load offset is needed.
func Write(f *File) ([]byte, error) {
	if f.TextSize == 0 {
		return nil, errors.New("symbol file without code")
	}
	le := binary.LittleEndian
	shstr := newStrtab()
	str := newStrtab()
	var syms bytes.Buffer
	syms.Write(make([]byte, 24)) // the null symbol
	for _, s := range f.Syms {
		typ, shndx := elf.STT_OBJECT, uint16(elf.SHN_ABS)
		if s.Func {
			typ, shndx = elf.STT_FUNC, 1
		}
		var e [24]byte
		le.PutUint32(e[0:], str.add(s.Name))
		e[4] = byte(elf.ST_INFO(elf.STB_LOCAL, typ))
		le.PutUint16(e[6:], shndx)
		le.PutUint64(e[8:], s.Addr)
		le.PutUint64(e[16:], s.Size)
		syms.Write(e[:])
	}
	type sec struct {
		name                       string
		typ                        elf.SectionType
		flags                      elf.SectionFlag
		addr, size, link, info, al uint64
		entsize                    uint64
		data                       []byte
	}
	secs := []sec{
		{},
		{name: ".text", typ: elf.SHT_NOBITS, flags: elf.SHF_ALLOC | elf.SHF_EXECINSTR, addr: f.TextAddr, size: f.TextSize, al: 16},
		{name: ".eh_frame", typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC, addr: f.FrameAddr, size: uint64(len(f.Frame)), al: 8, data: f.Frame},
		{name: ".symtab", typ: elf.SHT_SYMTAB, link: 4, info: uint64(len(f.Syms) + 1), al: 8, entsize: 24, data: syms.Bytes()},
		{name: ".strtab", typ: elf.SHT_STRTAB, al: 1},
		{name: ".shstrtab", typ: elf.SHT_STRTAB, al: 1},
	}
	if len(f.Frame) == 0 {
		secs[2].typ = elf.SHT_NOBITS // keeps the indices; nothing to read
	}
	for i := range secs[1:] {
		secs[i+1].size = max(secs[i+1].size, uint64(len(secs[i+1].data)))
	}
	nameOff := make([]uint32, len(secs))
	for i := range secs[1:] {
		nameOff[i+1] = shstr.add(secs[i+1].name)
	}
	secs[4].data, secs[4].size = str.b.Bytes(), uint64(str.b.Len())
	secs[5].data, secs[5].size = shstr.b.Bytes(), uint64(shstr.b.Len())

	var out bytes.Buffer
	out.Write(make([]byte, 64))
	offs := make([]uint64, len(secs))
	for i := range secs[1:] {
		s := &secs[i+1]
		if s.typ == elf.SHT_NOBITS {
			offs[i+1] = uint64(out.Len())
			continue
		}
		for uint64(out.Len())%max(s.al, 1) != 0 {
			out.WriteByte(0)
		}
		offs[i+1] = uint64(out.Len())
		out.Write(s.data)
	}
	for out.Len()%8 != 0 {
		out.WriteByte(0)
	}
	shoff := uint64(out.Len())
	for i, s := range secs {
		var h [64]byte
		le.PutUint32(h[0:], nameOff[i])
		le.PutUint32(h[4:], uint32(s.typ))
		le.PutUint64(h[8:], uint64(s.flags))
		le.PutUint64(h[16:], s.addr)
		le.PutUint64(h[24:], offs[i])
		le.PutUint64(h[32:], s.size)
		le.PutUint32(h[40:], uint32(s.link))
		le.PutUint32(h[44:], uint32(s.info))
		le.PutUint64(h[48:], s.al)
		le.PutUint64(h[56:], s.entsize)
		out.Write(h[:])
	}
	b := out.Bytes()
	copy(b, []byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)})
	le.PutUint16(b[16:], uint16(elf.ET_EXEC))
	le.PutUint16(b[18:], uint16(elf.EM_X86_64))
	le.PutUint32(b[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(b[40:], shoff)
	le.PutUint16(b[52:], 64) // e_ehsize
	le.PutUint16(b[58:], 64) // e_shentsize
	le.PutUint16(b[60:], uint16(len(secs)))
	le.PutUint16(b[62:], 5) // e_shstrndx
	return b, nil
}

type strtab struct{ b bytes.Buffer }

func newStrtab() *strtab {
	t := &strtab{}
	t.b.WriteByte(0)
	return t
}

func (t *strtab) add(s string) uint32 {
	off := uint32(t.b.Len())
	t.b.WriteString(s)
	t.b.WriteByte(0)
	return off
}
