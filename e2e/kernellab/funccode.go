package kernellab

import (
	"debug/elf"
	"encoding/binary"
	"fmt"

	"livesplice/internal/update"
)

// FuncCode takes function fn out of a relocatable object: its bytes, and
// its relocations in the update file's symbolic form, appending the symbols
// they name to syms (reusing equal ones). file is the source file of the
// object's statics. It also returns the index in syms of the function
// itself (a local symbol for a static).
func FuncCode(obj, fn, file string, syms *[]update.Symbol) (*update.Code, int, error) {
	ef, err := elf.Open(obj)
	if err != nil {
		return nil, 0, err
	}
	defer ef.Close()
	all, err := ef.Symbols()
	if err != nil {
		return nil, 0, err
	}
	add := func(y update.Symbol) int {
		for i, s := range *syms {
			if s == y {
				return i
			}
		}
		*syms = append(*syms, y)
		return len(*syms) - 1
	}
	var sym *elf.Symbol
	for i, s := range all {
		if s.Name == fn && elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Section > 0 && int(s.Section) < len(ef.Sections) {
			sym = &all[i]
		}
	}
	if sym == nil {
		return nil, 0, fmt.Errorf("%s: no function %s", obj, fn)
	}
	self := add(symbolOf(ef, *sym, file))
	sec := ef.Sections[sym.Section]
	data, err := sec.Data()
	if err != nil {
		return nil, 0, err
	}
	lo, hi := sym.Value, sym.Value+sym.Size
	if hi > uint64(len(data)) || lo > hi {
		return nil, 0, fmt.Errorf("%s: %s lies outside its section", obj, fn)
	}
	code := &update.Code{Data: data[lo:hi]}
	for _, rs := range ef.Sections {
		if rs.Type != elf.SHT_RELA || int(rs.Info) >= len(ef.Sections) || ef.Sections[rs.Info] != sec {
			continue
		}
		rd, err := rs.Data()
		if err != nil {
			return nil, 0, err
		}
		for k := 0; k+24 <= len(rd); k += 24 {
			off := binary.LittleEndian.Uint64(rd[k:])
			info := binary.LittleEndian.Uint64(rd[k+8:])
			addend := int64(binary.LittleEndian.Uint64(rd[k+16:]))
			if off < lo || off >= hi {
				continue
			}
			si := int(info>>32) - 1
			if si < 0 || si >= len(all) {
				return nil, 0, fmt.Errorf("%s: relocation at %#x: bad symbol", obj, off)
			}
			code.Relocs = append(code.Relocs, update.Reloc{Offset: off - lo, Type: uint32(info), Symbol: add(symbolOf(ef, all[si], file)), Addend: addend})
		}
	}
	return code, self, nil
}

// symbolOf gives an ELF symbol its update file form.
func symbolOf(ef *elf.File, s elf.Symbol, file string) update.Symbol {
	typ := ""
	switch elf.ST_TYPE(s.Info) {
	case elf.STT_FUNC:
		typ = "func"
	case elf.STT_OBJECT:
		typ = "object"
	case elf.STT_SECTION:
		name := ""
		if int(s.Section) < len(ef.Sections) {
			name = ef.Sections[s.Section].Name
		}
		return update.Symbol{Kind: update.SymAnon, Name: name}
	}
	if elf.ST_BIND(s.Info) == elf.STB_LOCAL {
		return update.Symbol{Kind: update.SymLocal, Name: s.Name, File: file, Type: typ}
	}
	return update.Symbol{Kind: update.SymGlobal, Name: s.Name, Type: typ}
}
