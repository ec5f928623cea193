package klp

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"regexp"
)

// Dynamic debug descriptors (pr_debug, dev_dbg: a static struct _ddebug in
// section __dyndbg per call site) are not data of the running kernel that
// a patch changes: a changed function's descriptors are new descriptors of
// the new code, which the module loader registers (and whose static keys
// the module's __jump_table entries switch). Their gcc names
// (__UNIQUE_ID_ddebugNNN.MM) are numbered by __COUNTER__, which any added
// macro shifts, and their line numbers move with every edit above them.
//
// So before the differ runs, both objects of a unit get their descriptors
// renamed after what they are: __livesplice_ddebug_<function>_<k>_<hash of
// the format>, k counting the function's descriptors. An unchanged function
// then refers to a descriptor of the same name in pre and post (no change);
// a descriptor whose message changed has another name (its function
// changes). Both objects' descriptor sections are set aside as metadata
// (the differ compares no descriptor data); the post object's is renamed
// __dyndbG, so it has no pre twin and the differ carries it whole into the
// module when new code refers to it; the module gets it back as a
// writable __dyndbg.

const (
	dyndbgSection  = "__dyndbg"
	dyndbgCarried  = "__dyndbG" // the post object's __dyndbg while diffing
	ddebugFuncOff  = 8          // struct _ddebug: modname, function, filename, format
	ddebugFmtOff   = 24
	dyndbgNameBase = "__livesplice_ddebug_"
)

var cIdent = regexp.MustCompile(`[^A-Za-z0-9_]`)

// canonDyndbg returns obj with its dynamic debug descriptors renamed (see
// above); post also renames the post object's section.
func canonDyndbg(obj []byte, post bool) ([]byte, error) {
	f, err := elf.NewFile(bytes.NewReader(obj))
	if err != nil {
		return nil, err
	}
	dsec := -1
	for i, s := range f.Sections {
		if s.Name == dyndbgSection {
			dsec = i
		}
	}
	if dsec < 0 {
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
	// The descriptor fields' relocations, by offset in __dyndbg.
	relocAt := map[uint64]rawReloc{}
	for _, s := range f.Sections {
		if s.Type != elf.SHT_RELA || int(s.Info) != dsec {
			continue
		}
		d, err := s.Data()
		if err != nil || len(d)%24 != 0 {
			return nil, fmt.Errorf("%s: bad relocations", s.Name)
		}
		for o := 0; o < len(d); o += 24 {
			info := binary.LittleEndian.Uint64(d[o+8:])
			relocAt[binary.LittleEndian.Uint64(d[o:])] = rawReloc{typ: uint32(info), sym: int(info >> 32), addend: int64(binary.LittleEndian.Uint64(d[o+16:]))}
		}
	}
	str := func(at uint64) string {
		r, ok := relocAt[at]
		if !ok || r.sym <= 0 || r.sym > len(syms) {
			return ""
		}
		y := syms[r.sym-1]
		if y.Section == elf.SHN_UNDEF || int(y.Section) >= len(f.Sections) {
			return y.Name
		}
		d, err := f.Sections[y.Section].Data()
		off := int64(y.Value) + r.addend
		if err != nil || off < 0 || off >= int64(len(d)) {
			return ""
		}
		s := d[off:]
		if n := bytes.IndexByte(s, 0); n >= 0 {
			s = s[:n]
		}
		return string(s)
	}
	strs, err := strtab.Data()
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), obj...)
	newStrs := append([]byte(nil), strs...)
	count := map[string]int{}
	renamed := 0
	for i, y := range syms {
		if int(y.Section) != dsec || elf.ST_TYPE(y.Info) != elf.STT_OBJECT {
			continue
		}
		fn := cIdent.ReplaceAllString(str(y.Value+ddebugFuncOff), "_")
		h := fnv.New32a()
		h.Write([]byte(str(y.Value + ddebugFmtOff)))
		name := fmt.Sprintf("%s%s_%d_%08x", dyndbgNameBase, fn, count[fn], h.Sum32())
		count[fn]++
		at := symtab.Offset + uint64(i+1)*24
		if at+4 > uint64(len(out)) {
			return nil, fmt.Errorf("symbol %d outside the file", i+1)
		}
		binary.LittleEndian.PutUint32(out[at:], uint32(len(newStrs)))
		newStrs = append(append(newStrs, name...), 0)
		renamed++
	}
	if renamed > 0 {
		// The longer string table goes at the end of the file.
		for len(out)%8 != 0 {
			out = append(out, 0)
		}
		shoff := binary.LittleEndian.Uint64(out[0x28:])
		shentsize := uint64(binary.LittleEndian.Uint16(out[0x3a:]))
		hdr := shoff + uint64(symtab.Link)*shentsize
		binary.LittleEndian.PutUint64(out[hdr+0x18:], uint64(len(out))) // sh_offset
		binary.LittleEndian.PutUint64(out[hdr+0x20:], uint64(len(newStrs)))
		out = append(out, newStrs...)
	}
	if post {
		shoff := binary.LittleEndian.Uint64(out[0x28:])
		shentsize := uint64(binary.LittleEndian.Uint16(out[0x3a:]))
		shstrndx := int(binary.LittleEndian.Uint16(out[0x3e:]))
		if shstrndx >= len(f.Sections) {
			return nil, fmt.Errorf("bad section name table index")
		}
		shstr := f.Sections[shstrndx].Offset
		name := uint64(binary.LittleEndian.Uint32(out[shoff+uint64(dsec)*shentsize:]))
		at := shstr + name + uint64(len(dyndbgSection)) - 1
		if at >= uint64(len(out)) || out[at] != 'g' {
			return nil, fmt.Errorf("section name of %s not where expected", dyndbgSection)
		}
		out[at] = 'G'
	}
	return out, nil
}
