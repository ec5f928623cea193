package klp

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
)

// ELF constants of the livepatch module format
// (Documentation/livepatch/module-elf-format.rst).
const (
	shnLivepatch     = 0xff20
	shfRelaLivepatch = 0x00100000
)

// FixModule turns the linked module's references to livepatch symbols
// (undefined symbols named .klp.sym.<obj>.<name>,<pos>, which modpost only
// warned about) into what the livepatch core resolves: the symbols are
// marked SHN_LIVEPATCH and their relocations move from the ordinary .rela
// sections into .klp.rela.<obj><section> sections (SHF_ALLOC |
// SHF_RELA_LIVEPATCH), one per object and target section. The module loader
// skips both; livepatch applies them once the object is loaded.
func FixModule(ko []byte) ([]byte, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, fmt.Errorf("module: %w", err)
	}
	if f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB || f.Type != elf.ET_REL {
		return nil, fmt.Errorf("module: not a 64-bit little-endian relocatable object")
	}
	out := append([]byte(nil), ko...)
	le := binary.LittleEndian
	shoff := le.Uint64(out[0x28:])
	shnum := int(le.Uint16(out[0x3c:]))
	shstrndx := int(le.Uint16(out[0x3e:]))
	if shnum != len(f.Sections) || shstrndx >= shnum || le.Uint16(out[0x3a:]) != 64 || shoff > uint64(len(out)) || uint64(len(out))-shoff < uint64(shnum)*64 {
		return nil, fmt.Errorf("module: unexpected section header table")
	}
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOBITS && (s.Offset > uint64(len(out)) || uint64(len(out))-s.Offset < s.Size) {
			return nil, fmt.Errorf("module: section %s outside the file", s.Name)
		}
	}
	symtab := -1
	for i, s := range f.Sections {
		if s.Type == elf.SHT_SYMTAB {
			symtab = i
		}
	}
	if symtab < 0 {
		return nil, fmt.Errorf("module: no symbol table")
	}
	syms, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("module: %w", err)
	}
	st := f.Sections[symtab]
	klpObj := map[int]string{} // symbol index -> object name
	for i, y := range syms {
		rest, ok := strings.CutPrefix(y.Name, ".klp.sym.")
		if !ok {
			continue
		}
		obj, _, ok := strings.Cut(rest, ".")
		if !ok || y.Section != elf.SHN_UNDEF {
			return nil, fmt.Errorf("module: malformed livepatch symbol %q", y.Name)
		}
		idx := i + 1
		at := st.Offset + uint64(idx)*24 + 6 // st_shndx
		if at+2 > uint64(len(out)) {
			return nil, fmt.Errorf("module: symbol table outside the file")
		}
		le.PutUint16(out[at:], shnLivepatch)
		klpObj[idx] = obj
	}
	type key struct {
		obj    string
		target int
	}
	moved := map[key][]byte{}
	for _, s := range f.Sections {
		if s.Type != elf.SHT_RELA || int(s.Link) != symtab || s.Flags&shfRelaLivepatch != 0 {
			continue
		}
		d := out[s.Offset : s.Offset+s.Size]
		var keep []byte
		for o := 0; o+24 <= len(d); o += 24 {
			e := d[o : o+24]
			si := int(le.Uint64(e[8:]) >> 32)
			if obj, ok := klpObj[si]; ok {
				k := key{obj, int(s.Info)}
				moved[k] = append(moved[k], e...)
				continue
			}
			keep = append(keep, e...)
		}
		if len(keep) == len(d) {
			continue
		}
		copy(d, keep)
		for i := len(keep); i < len(d); i++ {
			d[i] = 0
		}
		// sh_size of this section header
		hdr := shoff + uint64(sectionIndex(f, s))*64
		le.PutUint64(out[hdr+32:], uint64(len(keep)))
	}
	if len(moved) == 0 {
		return out, nil
	}
	var keys []key
	for k := range moved {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(a, b int) bool {
		if keys[a].obj != keys[b].obj {
			return keys[a].obj < keys[b].obj
		}
		return keys[a].target < keys[b].target
	})
	// New .shstrtab with the new names, then the new sections' data, then
	// a new section header table: all appended, nothing else moves.
	oldShstr, err := f.Sections[shstrndx].Data()
	if err != nil {
		return nil, fmt.Errorf("module: %w", err)
	}
	shstr := append([]byte(nil), oldShstr...)
	nameOff := make([]uint32, len(keys))
	for i, k := range keys {
		nameOff[i] = uint32(len(shstr))
		shstr = append(shstr, ".klp.rela."+k.obj+f.Sections[k.target].Name+"\x00"...)
	}
	align := func() {
		for len(out)%8 != 0 {
			out = append(out, 0)
		}
	}
	shstrOff := uint64(len(out))
	out = append(out, shstr...)
	dataOff := make([]uint64, len(keys))
	for i, k := range keys {
		align()
		dataOff[i] = uint64(len(out))
		out = append(out, moved[k]...)
	}
	align()
	newShoff := uint64(len(out))
	hdrs := append([]byte(nil), out[shoff:shoff+uint64(shnum)*64]...) // with the sizes changed above
	out = append(out, hdrs...)
	sh := out[newShoff+uint64(shstrndx)*64:]
	le.PutUint64(sh[24:], shstrOff)
	le.PutUint64(sh[32:], uint64(len(shstr)))
	for i, k := range keys {
		var h [64]byte
		le.PutUint32(h[0:], nameOff[i])
		le.PutUint32(h[4:], uint32(elf.SHT_RELA))
		le.PutUint64(h[8:], uint64(elf.SHF_ALLOC|elf.SHF_INFO_LINK|shfRelaLivepatch))
		le.PutUint64(h[24:], dataOff[i])
		le.PutUint64(h[32:], uint64(len(moved[k])))
		le.PutUint32(h[40:], uint32(symtab))
		le.PutUint32(h[44:], uint32(k.target))
		le.PutUint64(h[48:], 8)
		le.PutUint64(h[56:], 24)
		out = append(out, h[:]...)
	}
	le.PutUint64(out[0x28:], newShoff)
	le.PutUint16(out[0x3c:], uint16(shnum+len(keys)))
	return out, nil
}

func sectionIndex(f *elf.File, s *elf.Section) int {
	for i, x := range f.Sections {
		if x == s {
			return i
		}
	}
	return -1
}
