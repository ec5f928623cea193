package kernel

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
)

// KlpFunc is one struct klp_func of a livepatch module.
type KlpFunc struct {
	Old    string // the replaced function
	New    string // the replacement's symbol in the module
	Sympos int    // old_sympos: which same-named symbol (0: the name is unique)
}

// NewFuncs reads from a livepatch module (.ko) which function of the module
// replaces which kernel function: each struct klp_func starts with
// {const char *old_name; void *new_func; unsigned long old_sympos; ...}, so
// in the module's relocations a pointer to a string naming an old function
// is followed, 8 bytes on, by a pointer to the new function, and 8 bytes
// further lies the sympos. Only names in want are reported. Apply matches
// the symbol the module will patch (its sympos), and a stacked update uses
// the new function's name to find the code it was built on.
func NewFuncs(ko []byte, want map[string]bool) ([]KlpFunc, error) {
	ef, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, fmt.Errorf("livepatch module: %w", err)
	}
	syms, err := ef.Symbols()
	if err != nil {
		return nil, fmt.Errorf("livepatch module: symbols: %w", err)
	}
	type ref struct {
		sym    int // index into syms
		addend int64
	}
	var out []KlpFunc
	for _, rs := range ef.Sections {
		if rs.Type != elf.SHT_RELA || int(rs.Info) >= len(ef.Sections) || int(rs.Link) >= len(ef.Sections) {
			continue
		}
		tgt := ef.Sections[rs.Info]
		if tgt.Flags&elf.SHF_ALLOC == 0 || tgt.Flags&elf.SHF_EXECINSTR != 0 {
			continue
		}
		data, err := rs.Data()
		if err != nil {
			continue
		}
		var tdata []byte
		if tgt.Type == elf.SHT_PROGBITS {
			tdata, _ = tgt.Data()
		}
		at := map[uint64]ref{}
		for k := 0; k+24 <= len(data); k += 24 {
			off := binary.LittleEndian.Uint64(data[k:])
			info := binary.LittleEndian.Uint64(data[k+8:])
			add := int64(binary.LittleEndian.Uint64(data[k+16:]))
			si := int(info>>32) - 1 // ef.Symbols() drops the null symbol
			if elf.R_X86_64(uint32(info)) != elf.R_X86_64_64 || si < 0 || si >= len(syms) {
				continue
			}
			at[off] = ref{si, add}
		}
		for off, r := range at {
			nf, ok := at[off+8]
			if !ok {
				continue
			}
			old, ok := cString(ef, syms, r.sym, r.addend)
			if !ok || !want[old] {
				continue
			}
			name, ok := funcAt(syms, nf.sym, nf.addend)
			if !ok {
				continue
			}
			kf := KlpFunc{Old: old, New: name}
			if _, reloc := at[off+16]; !reloc && off+24 <= uint64(len(tdata)) {
				if v := binary.LittleEndian.Uint64(tdata[off+16:]); v < 1<<20 {
					kf.Sympos = int(v)
				}
			}
			out = append(out, kf)
		}
	}
	return out, nil
}

// cString reads the NUL-terminated string at symbol si + addend.
func cString(ef *elf.File, syms []elf.Symbol, si int, addend int64) (string, bool) {
	s := syms[si]
	if int(s.Section) <= 0 || int(s.Section) >= len(ef.Sections) {
		return "", false
	}
	sec := ef.Sections[s.Section]
	if sec.Type != elf.SHT_PROGBITS {
		return "", false
	}
	data, err := sec.Data()
	if err != nil {
		return "", false
	}
	off := int64(s.Value) + addend
	if off < 0 || off >= int64(len(data)) {
		return "", false
	}
	end := bytes.IndexByte(data[off:], 0)
	if end < 0 {
		return "", false
	}
	return string(data[off : off+int64(end)]), true
}

// funcAt names the function symbol si + addend points at (a function
// symbol itself, or a section symbol plus the function's offset).
func funcAt(syms []elf.Symbol, si int, addend int64) (string, bool) {
	s := syms[si]
	if elf.ST_TYPE(s.Info) == elf.STT_FUNC && addend == 0 {
		return s.Name, true
	}
	if elf.ST_TYPE(s.Info) != elf.STT_SECTION {
		return "", false
	}
	for _, f := range syms {
		if elf.ST_TYPE(f.Info) == elf.STT_FUNC && f.Section == s.Section && int64(f.Value) == int64(s.Value)+addend {
			return f.Name, true
		}
	}
	return "", false
}
