package klp

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"sort"
)

// outObject is a relocatable x86-64 ELF object being written: the
// livepatch's code, data and tables, linked into the module by kbuild.
type outObject struct {
	sections []*outSection
	symbols  []*outSymbol
	undef    map[string]int // undefined symbol name -> index
}

type outSection struct {
	name   string
	typ    elf.SectionType
	flags  elf.SectionFlag
	align  uint64
	data   []byte // nil for NOBITS
	size   uint64 // NOBITS size
	relocs []outReloc
	sym    int // its STT_SECTION symbol
}

type outReloc struct {
	off    uint64
	typ    uint32
	sym    int
	addend int64
}

type outSymbol struct {
	name  string
	bind  elf.SymBind
	typ   elf.SymType
	sec   int // index into sections; -1: undefined
	value uint64
	size  uint64
}

func newOutObject() *outObject { return &outObject{undef: map[string]int{}} }

// addSection adds a section and its section symbol.
func (o *outObject) addSection(s *outSection) int {
	o.sections = append(o.sections, s)
	i := len(o.sections) - 1
	s.sym = o.addSymbol(&outSymbol{bind: elf.STB_LOCAL, typ: elf.STT_SECTION, sec: i})
	if s.align == 0 {
		s.align = 1
	}
	return i
}

func (o *outObject) addSymbol(y *outSymbol) int {
	o.symbols = append(o.symbols, y)
	return len(o.symbols) - 1
}

// undefined returns the index of the undefined global symbol name.
func (o *outObject) undefined(name string) int {
	if i, ok := o.undef[name]; ok {
		return i
	}
	i := o.addSymbol(&outSymbol{name: name, bind: elf.STB_GLOBAL, typ: elf.STT_NOTYPE, sec: -1})
	o.undef[name] = i
	return i
}

type strtab struct {
	b   bytes.Buffer
	off map[string]uint32
}

func newStrtab() *strtab {
	t := &strtab{off: map[string]uint32{}}
	t.b.WriteByte(0)
	return t
}

func (t *strtab) add(s string) uint32 {
	if s == "" {
		return 0
	}
	if o, ok := t.off[s]; ok {
		return o
	}
	o := uint32(t.b.Len())
	t.b.WriteString(s)
	t.b.WriteByte(0)
	t.off[s] = o
	return o
}

// bytes encodes the object: sections in order, a .rela section after the
// data for each section with relocations, then .symtab, .strtab, .shstrtab.
func (o *outObject) bytes() []byte {
	// Symbol table order: null, locals, then globals (ELF requires it).
	order := make([]int, len(o.symbols))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		return o.symbols[order[a]].bind == elf.STB_LOCAL && o.symbols[order[b]].bind != elf.STB_LOCAL
	})
	newIdx := make([]int, len(o.symbols))
	firstGlobal := len(order) + 1
	for pos, i := range order {
		newIdx[i] = pos + 1
		if o.symbols[i].bind != elf.STB_LOCAL && firstGlobal == len(order)+1 {
			firstGlobal = pos + 1
		}
	}
	shstr, str := newStrtab(), newStrtab()
	type hdr struct {
		name           uint32
		typ            elf.SectionType
		flags          elf.SectionFlag
		off, size      uint64
		link, info     uint32
		align, entsize uint64
		data           []byte
	}
	var hdrs []hdr
	hdrs = append(hdrs, hdr{})
	secIdx := make([]int, len(o.sections))
	for i, s := range o.sections {
		secIdx[i] = len(hdrs)
		size := uint64(len(s.data))
		if s.typ == elf.SHT_NOBITS {
			size = s.size
		}
		hdrs = append(hdrs, hdr{name: shstr.add(s.name), typ: s.typ, flags: s.flags, size: size, align: s.align, data: s.data})
	}
	symtabIdx := len(hdrs)
	for _, s := range o.sections {
		if len(s.relocs) > 0 {
			symtabIdx++
		}
	}
	for i, s := range o.sections {
		if len(s.relocs) == 0 {
			continue
		}
		var b bytes.Buffer
		rs := append([]outReloc(nil), s.relocs...)
		sort.SliceStable(rs, func(a, b int) bool { return rs[a].off < rs[b].off })
		for _, r := range rs {
			binary.Write(&b, binary.LittleEndian, r.off)
			binary.Write(&b, binary.LittleEndian, uint64(newIdx[r.sym])<<32|uint64(r.typ))
			binary.Write(&b, binary.LittleEndian, r.addend)
		}
		hdrs = append(hdrs, hdr{name: shstr.add(".rela" + s.name), typ: elf.SHT_RELA, flags: elf.SHF_INFO_LINK, size: uint64(b.Len()),
			link: uint32(symtabIdx), info: uint32(secIdx[i]), align: 8, entsize: 24, data: b.Bytes()})
	}
	var syms bytes.Buffer
	syms.Write(make([]byte, 24))
	for _, i := range order {
		y := o.symbols[i]
		shndx := uint16(elf.SHN_UNDEF)
		if y.sec >= 0 {
			shndx = uint16(secIdx[y.sec])
		}
		binary.Write(&syms, binary.LittleEndian, str.add(y.name))
		syms.WriteByte(byte(y.bind)<<4 | byte(y.typ))
		syms.WriteByte(0)
		binary.Write(&syms, binary.LittleEndian, shndx)
		binary.Write(&syms, binary.LittleEndian, y.value)
		binary.Write(&syms, binary.LittleEndian, y.size)
	}
	hdrs = append(hdrs, hdr{name: shstr.add(".symtab"), typ: elf.SHT_SYMTAB, size: uint64(syms.Len()), link: uint32(symtabIdx + 1),
		info: uint32(firstGlobal), align: 8, entsize: 24, data: syms.Bytes()})
	strName := shstr.add(".strtab")
	shstrName := shstr.add(".shstrtab")
	hdrs = append(hdrs, hdr{name: strName, typ: elf.SHT_STRTAB, size: uint64(str.b.Len()), align: 1, data: str.b.Bytes()})
	hdrs = append(hdrs, hdr{name: shstrName, typ: elf.SHT_STRTAB, size: uint64(shstr.b.Len()), align: 1, data: shstr.b.Bytes()})

	var out bytes.Buffer
	out.Write(make([]byte, 64))
	for i := range hdrs {
		h := &hdrs[i]
		if h.typ == elf.SHT_NULL || h.typ == elf.SHT_NOBITS {
			continue
		}
		al := max(h.align, 1)
		for uint64(out.Len())%al != 0 {
			out.WriteByte(0)
		}
		h.off = uint64(out.Len())
		out.Write(h.data)
	}
	for out.Len()%8 != 0 {
		out.WriteByte(0)
	}
	shoff := uint64(out.Len())
	for _, h := range hdrs {
		binary.Write(&out, binary.LittleEndian, h.name)
		binary.Write(&out, binary.LittleEndian, uint32(h.typ))
		binary.Write(&out, binary.LittleEndian, uint64(h.flags))
		binary.Write(&out, binary.LittleEndian, uint64(0)) // addr
		binary.Write(&out, binary.LittleEndian, h.off)
		binary.Write(&out, binary.LittleEndian, h.size)
		binary.Write(&out, binary.LittleEndian, h.link)
		binary.Write(&out, binary.LittleEndian, h.info)
		binary.Write(&out, binary.LittleEndian, h.align)
		binary.Write(&out, binary.LittleEndian, h.entsize)
	}
	b := out.Bytes()
	copy(b, []byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT), byte(elf.ELFOSABI_NONE)})
	le := binary.LittleEndian
	le.PutUint16(b[0x10:], uint16(elf.ET_REL))
	le.PutUint16(b[0x12:], uint16(elf.EM_X86_64))
	le.PutUint32(b[0x14:], uint32(elf.EV_CURRENT))
	le.PutUint64(b[0x28:], shoff)
	le.PutUint16(b[0x34:], 64) // ehsize
	le.PutUint16(b[0x3a:], 64) // shentsize
	le.PutUint16(b[0x3c:], uint16(len(hdrs)))
	le.PutUint16(b[0x3e:], uint16(len(hdrs)-1))
	return b
}
