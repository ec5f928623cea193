package klp

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// symposSection holds, in the module, one {object, name, &old_sympos}
// entry per replaced function (written by the stub).
const symposSection = ".livesplice.sympos"

// FuncRef is a replaced function of a livepatch module and where its
// klp_func.old_sympos lives in the module file.
type FuncRef struct {
	Object, Name string
	Sympos       uint64
	off          uint64 // file offset of old_sympos
}

// Funcs lists the module's replaced functions with their old_sympos.
// create writes 0 (the name must be unique); apply, which learns by run-pre
// matching which of several same-named functions is the one, can set the
// position with SetFuncSympos before loading the module.
func Funcs(ko []byte) ([]FuncRef, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, fmt.Errorf("module: %w", err)
	}
	syms, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("module: %w", err)
	}
	tab := f.Section(symposSection)
	if tab == nil {
		return nil, nil
	}
	var relocs []rawReloc
	for _, s := range f.Sections {
		if s.Type == elf.SHT_RELA && int(s.Info) < len(f.Sections) && f.Sections[s.Info] == tab {
			d, err := s.Data()
			if err != nil || len(d)%24 != 0 {
				return nil, fmt.Errorf("module: %s: bad relocations", s.Name)
			}
			for o := 0; o < len(d); o += 24 {
				info := binary.LittleEndian.Uint64(d[o+8:])
				relocs = append(relocs, rawReloc{off: binary.LittleEndian.Uint64(d[o:]), typ: uint32(info), sym: int(info >> 32), addend: int64(binary.LittleEndian.Uint64(d[o+16:]))})
			}
		}
	}
	// place of the pointer at offset off of the table: section and offset
	place := func(off uint64) (*elf.Section, uint64, error) {
		for _, r := range relocs {
			if r.off != off {
				continue
			}
			if r.sym <= 0 || r.sym > len(syms) || elf.R_X86_64(r.typ) != elf.R_X86_64_64 {
				break
			}
			y := syms[r.sym-1]
			if y.Section == elf.SHN_UNDEF || int(y.Section) >= len(f.Sections) {
				break
			}
			v := int64(y.Value) + r.addend
			s := f.Sections[y.Section]
			if v < 0 || uint64(v) >= s.Size {
				break
			}
			return s, uint64(v), nil
		}
		return nil, 0, fmt.Errorf("module: %s: entry at %#x is not relocated to the module", symposSection, off)
	}
	str := func(off uint64) (string, error) {
		s, o, err := place(off)
		if err != nil {
			return "", err
		}
		d, err := s.Data()
		if err != nil {
			return "", err
		}
		b := d[o:]
		if i := bytes.IndexByte(b, 0); i >= 0 {
			return string(b[:i]), nil
		}
		return "", fmt.Errorf("module: unterminated string in %s", s.Name)
	}
	var out []FuncRef
	for e := uint64(0); e+24 <= tab.Size; e += 24 {
		obj, err := str(e)
		if err != nil {
			return nil, err
		}
		name, err := str(e + 8)
		if err != nil {
			return nil, err
		}
		s, o, err := place(e + 16)
		if err != nil {
			return nil, err
		}
		if s.Type != elf.SHT_PROGBITS || o+8 > s.Size || s.Offset+o+8 > uint64(len(ko)) {
			return nil, fmt.Errorf("module: old_sympos of %s outside its section", name)
		}
		fo := s.Offset + o
		out = append(out, FuncRef{Object: obj, Name: name, Sympos: binary.LittleEndian.Uint64(ko[fo:]), off: fo})
	}
	return out, nil
}

// SetFuncSympos returns a copy of the module in which the replaced function
// name of object has old_sympos pos (its position among same-named
// functions of the object in kallsyms order, counting from 1).
func SetFuncSympos(ko []byte, object, name string, pos uint64) ([]byte, error) {
	fs, err := Funcs(ko)
	if err != nil {
		return nil, err
	}
	for _, f := range fs {
		if f.Object == object && f.Name == name {
			out := append([]byte(nil), ko...)
			binary.LittleEndian.PutUint64(out[f.off:], pos)
			return out, nil
		}
	}
	return nil, fmt.Errorf("module replaces no function %s in %s", name, object)
}

// SetSymbolSympos returns a copy of the module in which the livepatch
// symbol .klp.sym.<object>.<name>,0 becomes ...,<pos>. The name keeps its
// length, so pos must be 1..9.
func SetSymbolSympos(ko []byte, object, name string, pos int) ([]byte, error) {
	if pos < 1 || pos > 9 {
		return nil, fmt.Errorf("livepatch symbol %s: position %d cannot be written in place (1..9)", name, pos)
	}
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, fmt.Errorf("module: %w", err)
	}
	var strtab *elf.Section
	for _, s := range f.Sections {
		if s.Type == elf.SHT_SYMTAB && int(s.Link) < len(f.Sections) {
			strtab = f.Sections[s.Link]
		}
	}
	if strtab == nil || strtab.Offset+strtab.Size > uint64(len(ko)) {
		return nil, fmt.Errorf("module: no symbol string table")
	}
	want := "\x00" + KLPSymbol(object, name) + "\x00"
	d := ko[strtab.Offset : strtab.Offset+strtab.Size]
	i := bytes.Index(d, []byte(want))
	if i < 0 {
		return nil, fmt.Errorf("module has no livepatch symbol %s in %s", name, object)
	}
	out := append([]byte(nil), ko...)
	digit := strtab.Offset + uint64(i+len(want)-2)
	out[digit] = strconv.Itoa(pos)[0]
	if !strings.HasSuffix(want, ",0\x00") {
		return nil, fmt.Errorf("livepatch symbol %s: unexpected name", name)
	}
	return out, nil
}
