package klp

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
)

// static_cpu_has() and alternative_has_cap_*() leave, in the function, a
// `jmp` into .altinstr_aux, where a stub tests the CPU feature bit and
// jumps back into the function (.altinstructions patch the jmp away at
// boot once the features are known). .altinstr_aux is one anonymous section
// per unit, holding every function's stubs, so new code that jumps into it
// cannot name the running kernel's copy.
//
// Before the differ runs, both objects of a unit get their code's
// references to .altinstr_aux redirected to an undefined symbol
// (auxSymbol, same addend): the differ compares them by name and offset,
// as it compared the section place before, and new code keeps a reference
// to auxSymbol. The module gets its own copy of the unit's .altinstr_aux
// (auxCopy) for those references; in it, the stubs of functions the module
// does not carry are dead code, so their jumps into those functions are
// left unrelocated.

const (
	auxSection = ".altinstr_aux"
	auxSymbol  = "__livesplice_altinstr_aux"
)

// redirectAux returns obj with its code's relocations against
// .altinstr_aux turned into relocations against auxSymbol (appended to
// the symbol table, which moves to the end of the file with its strings).
func redirectAux(obj []byte) ([]byte, error) {
	f, err := elf.NewFile(bytes.NewReader(obj))
	if err != nil {
		return nil, err
	}
	aux := -1
	for i, s := range f.Sections {
		if s.Name == auxSection {
			aux = i
		}
	}
	if aux < 0 {
		return obj, nil
	}
	symtab := f.SectionByType(elf.SHT_SYMTAB)
	if symtab == nil || int(symtab.Link) >= len(f.Sections) {
		return nil, fmt.Errorf("no symbol table")
	}
	strtab := f.Sections[symtab.Link]
	syms, err := f.Symbols()
	if err != nil {
		return nil, err
	}
	newIdx := len(syms) + 1 // ELF index of the appended symbol
	out := append([]byte(nil), obj...)
	n := 0
	for _, s := range f.Sections {
		if s.Type != elf.SHT_RELA || int(s.Info) >= len(f.Sections) || int(s.Info) == aux {
			continue
		}
		if f.Sections[s.Info].Flags&elf.SHF_EXECINSTR == 0 {
			continue // tables (ORC, alternatives) keep their references
		}
		if s.Offset+s.Size > uint64(len(out)) {
			return nil, fmt.Errorf("%s outside the file", s.Name)
		}
		for o := s.Offset; o+24 <= s.Offset+s.Size; o += 24 {
			info := binary.LittleEndian.Uint64(out[o+8:])
			yi := int(info >> 32)
			if yi <= 0 || yi > len(syms) || int(syms[yi-1].Section) != aux {
				continue
			}
			add := int64(binary.LittleEndian.Uint64(out[o+16:])) + int64(syms[yi-1].Value)
			binary.LittleEndian.PutUint64(out[o+8:], uint64(newIdx)<<32|uint64(uint32(info)))
			binary.LittleEndian.PutUint64(out[o+16:], uint64(add))
			n++
		}
	}
	if n == 0 {
		return obj, nil
	}
	strs, err := strtab.Data()
	if err != nil {
		return nil, err
	}
	sym, err := symtab.Data()
	if err != nil {
		return nil, err
	}
	nameOff := len(strs)
	strs = append(append(append([]byte(nil), strs...), auxSymbol...), 0)
	ent := make([]byte, 24)
	binary.LittleEndian.PutUint32(ent, uint32(nameOff))
	ent[4] = byte(elf.STB_GLOBAL)<<4 | byte(elf.STT_NOTYPE)
	sym = append(append([]byte(nil), sym...), ent...)
	shoff := binary.LittleEndian.Uint64(out[0x28:])
	shentsize := uint64(binary.LittleEndian.Uint16(out[0x3a:]))
	place := func(idx uint32, data []byte) {
		for len(out)%8 != 0 {
			out = append(out, 0)
		}
		hdr := shoff + uint64(idx)*shentsize
		binary.LittleEndian.PutUint64(out[hdr+0x18:], uint64(len(out)))
		binary.LittleEndian.PutUint64(out[hdr+0x20:], uint64(len(data)))
		out = append(out, data...)
	}
	symIdx := -1
	for i, s := range f.Sections {
		if s == symtab {
			symIdx = i
		}
	}
	place(uint32(symIdx), sym)
	place(symtab.Link, strs)
	return out, nil
}

// auxCopy returns the module symbol of the unit's own copy of its post
// .altinstr_aux, made once per unit.
func (m *moduleBuilder) auxCopy(c *unitCtx) (int, error) {
	if c.aux != 0 {
		return c.aux, nil
	}
	p, err := readPost(c.u)
	if err != nil {
		return 0, err
	}
	var src *elf.Section
	si := -1
	for i, s := range p.f.Sections {
		if s.Name == auxSection {
			src, si = s, i
		}
	}
	if src == nil {
		return 0, refused(c.file, auxSection, "new code refers to %s, which the unit does not have", auxSection)
	}
	data, err := src.Data()
	if err != nil {
		return 0, fmt.Errorf("%s: %s: %w", c.u.Rel, auxSection, err)
	}
	mi := m.obj.addSection(&outSection{name: auxSection, typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC | elf.SHF_EXECINSTR, align: max(src.Addralign, 1), data: append([]byte(nil), data...)})
	os := m.obj.sections[mi]
	for _, r := range p.relocs[si] {
		if sec, _, _ := p.place(r); sec != nil && sec.Flags&elf.SHF_EXECINSTR != 0 {
			if _, ok := c.carried[sec.Name]; !ok {
				continue // a stub of a function the module does not carry: dead
			}
		}
		sym, add, err := m.postSymbol(c, p, r)
		if err != nil {
			return 0, err
		}
		os.relocs = append(os.relocs, outReloc{off: r.off, typ: r.typ, sym: sym, addend: add})
	}
	c.aux = os.sym
	return c.aux, nil
}
