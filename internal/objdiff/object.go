package objdiff

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
)

// object is a relocatable x86-64 ELF file split into sections with their
// relocations resolved to symbols.
type object struct {
	path     string
	file     string // STT_FILE name: the scope of its local symbols
	sections []*section
	symbols  []*symbol // ELF symbol table order; index 0 is the null symbol
	byName   map[string][]*section
	cuts     map[*section][]int64 // cutsOf, computed once per section
	elf      *elf.File            // for its DWARF (why.go)
	dw       *dwarfInfo           // its DWARF, read once
	dwRead   bool                 // dwarf() has run (dw nil: no usable DWARF)
}

type section struct {
	index  int
	name   string
	typ    elf.SectionType
	flags  elf.SectionFlag
	align  uint64
	size   uint64
	entsz  uint64
	data   []byte // nil for NOBITS
	relocs []reloc
	syms   []*symbol // symbols defined in it, by value
	mask   []byte    // data with relocation fields zeroed (masked)
}

type symbol struct {
	index   int
	name    string
	bind    elf.SymBind
	typ     elf.SymType
	sec     *section // nil: undefined or absolute
	value   uint64
	size    uint64
	undef   bool
	special bool // SHN_ABS, SHN_COMMON
}

type reloc struct {
	off    uint64
	typ    uint32
	sym    *symbol
	addend int64
}

func (s *section) exec() bool      { return s.flags&elf.SHF_EXECINSTR != 0 }
func (s *section) write() bool     { return s.flags&elf.SHF_WRITE != 0 }
func (s *section) alloc() bool     { return s.flags&elf.SHF_ALLOC != 0 }
func (s *section) strings() bool   { return s.flags&elf.SHF_MERGE != 0 && s.flags&elf.SHF_STRINGS != 0 }
func (s *section) mergeable() bool { return s.flags&elf.SHF_MERGE != 0 }
func (s *section) tls() bool       { return s.flags&elf.SHF_TLS != 0 }

// loadObject reads a relocatable object.
func loadObject(path string, data []byte) (*object, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("read object %s: %w", path, err)
	}
	if f.Type != elf.ET_REL || f.Machine != elf.EM_X86_64 || f.Class != elf.ELFCLASS64 {
		return nil, fmt.Errorf("read object %s: not an x86-64 relocatable object", path)
	}
	o := &object{path: path, byName: map[string][]*section{}, elf: f}
	o.sections = make([]*section, len(f.Sections))
	for i, sh := range f.Sections {
		s := &section{index: i, name: sh.Name, typ: sh.Type, flags: sh.Flags, align: sh.Addralign, size: sh.Size, entsz: sh.Entsize}
		if s.align == 0 {
			s.align = 1
		}
		if sh.Type != elf.SHT_NOBITS && sh.Type != elf.SHT_NULL {
			d, err := sh.Data()
			if err != nil {
				return nil, fmt.Errorf("read object %s: section %s: %w", path, sh.Name, err)
			}
			s.data = d
		}
		o.sections[i] = s
		o.byName[s.name] = append(o.byName[s.name], s)
	}
	syms, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("read object %s: symbols: %w", path, err)
	}
	o.symbols = make([]*symbol, len(syms)+1)
	o.symbols[0] = &symbol{undef: true}
	for i, es := range syms {
		y := &symbol{index: i + 1, name: es.Name, bind: elf.ST_BIND(es.Info), typ: elf.ST_TYPE(es.Info), value: es.Value, size: es.Size}
		switch {
		case es.Section == elf.SHN_UNDEF:
			y.undef = true
		case es.Section >= elf.SHN_LORESERVE:
			y.special = true
		case int(es.Section) < len(o.sections):
			y.sec = o.sections[es.Section]
			y.sec.syms = append(y.sec.syms, y)
		default:
			return nil, fmt.Errorf("read object %s: symbol %s: bad section %d", path, es.Name, es.Section)
		}
		if y.typ == elf.STT_FILE && o.file == "" {
			o.file = y.name
		}
		o.symbols[i+1] = y
	}
	for _, s := range o.sections {
		sort.SliceStable(s.syms, func(a, b int) bool { return s.syms[a].value < s.syms[b].value })
	}
	for i, sh := range f.Sections {
		if sh.Type != elf.SHT_RELA {
			continue
		}
		if sh.Info == 0 || int(sh.Info) >= len(o.sections) {
			return nil, fmt.Errorf("read object %s: %s: bad target section", path, sh.Name)
		}
		tgt := o.sections[sh.Info]
		d := o.sections[i].data
		if len(d)%24 != 0 {
			return nil, fmt.Errorf("read object %s: %s: bad size", path, sh.Name)
		}
		for p := 0; p < len(d); p += 24 {
			off := binary.LittleEndian.Uint64(d[p:])
			info := binary.LittleEndian.Uint64(d[p+8:])
			add := int64(binary.LittleEndian.Uint64(d[p+16:]))
			si := int(info >> 32)
			typ := uint32(info)
			if elf.R_X86_64(typ) == elf.R_X86_64_NONE {
				continue // binutils 2.40 leaves no-op entries: skip them
			}
			if si >= len(o.symbols) {
				return nil, fmt.Errorf("read object %s: %s: bad symbol index %d", path, sh.Name, si)
			}
			if off > tgt.size {
				return nil, fmt.Errorf("read object %s: %s: relocation offset %#x outside section", path, sh.Name, off)
			}
			tgt.relocs = append(tgt.relocs, reloc{off: off, typ: typ, sym: o.symbols[si], addend: add})
		}
		sort.SliceStable(tgt.relocs, func(a, b int) bool { return tgt.relocs[a].off < tgt.relocs[b].off })
	}
	return o, nil
}

// ignoredSection reports sections the differ never compares: metadata that
// does not reach a running process or is derived from the code.
func ignoredSection(s *section) bool {
	switch s.typ {
	case elf.SHT_NULL, elf.SHT_SYMTAB, elf.SHT_STRTAB, elf.SHT_RELA, elf.SHT_REL, elf.SHT_GROUP, elf.SHT_NOTE:
		return true
	}
	n := s.name
	return n == ".comment" || n == ".eh_frame" || strings.HasPrefix(n, ".debug") || strings.HasPrefix(n, customPrefix) ||
		strings.HasPrefix(n, ".note") || n == ".note.GNU-stack" || !s.alloc()
}

// symbolAt returns the defined, named symbol of s that covers off, preferring
// functions and objects over other symbols.
func (s *section) symbolAt(off uint64) *symbol {
	var best *symbol
	for _, y := range s.syms {
		if y.typ == elf.STT_SECTION || y.typ == elf.STT_FILE || y.name == "" {
			continue
		}
		if y.value <= off && (off < y.value+y.size || (y.size == 0 && off == y.value)) {
			if best == nil || (best.typ != elf.STT_FUNC && best.typ != elf.STT_OBJECT) {
				best = y
			}
		}
	}
	return best
}

// cstring returns the NUL-terminated string at off in s.
func (s *section) cstring(off int64) ([]byte, bool) {
	if off < 0 || off >= int64(len(s.data)) {
		return nil, false
	}
	d := s.data[off:]
	if i := bytes.IndexByte(d, 0); i >= 0 {
		return d[:i], true
	}
	return d, true
}
