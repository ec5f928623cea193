package klp

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"regexp"
	"strconv"
	"strings"

	"livesplice/internal/update"
)

// Read-only data the pre code refers to (strings, constant tables) is part
// of what run-pre matching must prove: a kernel source whose format string
// differs from the running kernel's compiles to the same instructions. So
// each anonymous read-only place a replaced function's pre code refers to
// gets the pre build's bytes in the kernel target, as a rodata section:
// the relocation then names that section (SymSection, addend relative to
// its start), and apply compares the running kernel's bytes at the place
// the running instruction refers to (internal/kernel, rodataAt). Checked:
// string sections (to the string's NUL), mergeable constants (one entry),
// and sections of one object (-fdata-sections; to the section's end, at
// most maxPinned bytes). Left unchecked: sections with relocations of their
// own (tables of pointers) and the unit's anonymous .rodata.

const maxPinned = 4096

// pinRodata rewrites the anonymous rodata references of kt's functions
// from index from on, reading the pre object of their unit.
func pinRodata(kt *update.Target, from int, pre []byte) error {
	f, err := elf.NewFile(bytes.NewReader(pre))
	if err != nil {
		return err
	}
	syms, err := f.Symbols()
	if err != nil {
		return err
	}
	relocs := map[int][]rawReloc{}
	for _, s := range f.Sections {
		if s.Type != elf.SHT_RELA || int(s.Info) >= len(f.Sections) {
			continue
		}
		d, err := s.Data()
		if err != nil || len(d)%24 != 0 {
			continue
		}
		for o := 0; o < len(d); o += 24 {
			info := binary.LittleEndian.Uint64(d[o+8:])
			relocs[int(s.Info)] = append(relocs[int(s.Info)], rawReloc{off: binary.LittleEndian.Uint64(d[o:]), typ: uint32(info), sym: int(info >> 32), addend: int64(binary.LittleEndian.Uint64(d[o+16:]))})
		}
	}
	pinned := map[int]int{} // ELF section -> kt section
	for fi := from; fi < len(kt.Functions); fi++ {
		fn := &kt.Functions[fi]
		if fn.Pre == nil {
			continue
		}
		// The function in the pre object: its section and value.
		var def *elf.Symbol
		for i := range syms {
			y := &syms[i]
			if y.Name == kt.Symbols[fn.Symbol].Name && elf.ST_TYPE(y.Info) == elf.STT_FUNC && y.Section != elf.SHN_UNDEF && int(y.Section) < len(f.Sections) {
				def = y
				break
			}
		}
		if def == nil {
			continue
		}
		at := map[uint64]rawReloc{}
		for _, r := range relocs[int(def.Section)] {
			if r.off >= def.Value && r.off < def.Value+def.Size {
				at[r.off-def.Value] = r
			}
		}
		for ri := range fn.Pre.Relocs {
			r := &fn.Pre.Relocs[ri]
			if kt.Symbols[r.Symbol].Kind != update.SymAnon {
				continue
			}
			raw, ok := at[r.Offset]
			if !ok || raw.sym <= 0 || raw.sym > len(syms) {
				continue
			}
			y := syms[raw.sym-1]
			if y.Section == elf.SHN_UNDEF || int(y.Section) >= len(f.Sections) {
				continue
			}
			si := int(y.Section)
			s := f.Sections[si]
			if s.Flags&elf.SHF_ALLOC == 0 || s.Flags&(elf.SHF_WRITE|elf.SHF_EXECINSTR) != 0 || s.Type != elf.SHT_PROGBITS || len(relocs[si]) > 0 {
				continue
			}
			if !strings.HasPrefix(s.Name, ".rodata.") || (s.Flags&elf.SHF_MERGE != 0) != rodataMergeable(s.Name) {
				continue // several anonymous objects (.rodata), or a name apply could not read the kind from
			}
			ki, ok := pinned[si]
			if !ok {
				d, err := s.Data()
				if err != nil || (s.Flags&elf.SHF_MERGE == 0 && len(d) > maxPinned) {
					continue // a large table stays unchecked rather than carried whole
				}
				ki = len(kt.Sections)
				kt.Sections = append(kt.Sections, update.Section{Name: s.Name, Kind: update.KindRodata, Align: max(s.Addralign, 1), Size: uint64(len(d)), Data: d})
				pinned[si] = ki
			}
			kt.Symbols = append(kt.Symbols, update.Symbol{Kind: update.SymSection, Section: ki})
			r.Symbol = len(kt.Symbols) - 1
			r.Addend = int64(y.Value) + raw.addend
		}
	}
	return nil
}

// rodataMergeable: apply can tell the section's kind from its name.
func rodataMergeable(name string) bool {
	str, n := RodataKind(name)
	return str || n > 0
}

var (
	strSection = regexp.MustCompile(`\.str[0-9]+\.[0-9]+$`)
	cstSection = regexp.MustCompile(`\.cst([0-9]+)$`)
)

// RodataKind tells from a section's name (as gcc names them, also with
// -fdata-sections: .rodata.str1.1, .rodata.<function>.str1.8,
// .rodata.cst16) whether it holds NUL-terminated strings, or mergeable
// constants of entsize bytes.
func RodataKind(name string) (str bool, entsize int) {
	if strSection.MatchString(name) {
		return true, 0
	}
	if m := cstSection.FindStringSubmatch(name); m != nil {
		n, _ := strconv.Atoi(m[1])
		return false, n
	}
	return false, 0
}
