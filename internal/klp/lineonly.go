package klp

import (
	"bytes"
	"debug/elf"
	"fmt"
	"regexp"

	"livesplice/internal/update"
)

// A patch that only moves lines (a blank line added at the top of a file)
// still changes functions whose messages name their place as
// "file.c:LINE" (fortify's field-spanning memcpy warning, for one): the
// strings differ, the code does not. Such functions are not changed in any
// way worth a livepatch (kpatch treats __LINE__-only changes the same), so
// when every function a unit replaces differs from its pre build only in
// those numbers, and the unit adds nothing, the unit is no change.

// lineOnly reports whether every replaced function of t differs from the
// pre build only in "<source file>:<number>" inside strings.
func lineOnly(u Unit, t *update.Target) bool {
	if len(t.Functions) == 0 {
		return false
	}
	pre, err1 := loadFuncs(u.Pre)
	post, err2 := loadFuncs(u.Post)
	if err1 != nil || err2 != nil {
		return false
	}
	for _, f := range t.Functions {
		if f.Status != update.StatusReplaced {
			return false // a new function is a change
		}
	}
	norm := func(b []byte) []byte { return fileLine.ReplaceAll(b, []byte("$1:N")) }
	for _, f := range t.Functions {
		a, b := pre[f.Name], post[f.Name]
		if a == nil || b == nil || a.opaque || b.opaque || !bytes.Equal(a.code, b.code) || len(a.relocs) != len(b.relocs) {
			return false
		}
		for i := range a.relocs {
			ra, rb := a.relocs[i], b.relocs[i]
			if ra.off != rb.off || ra.typ != rb.typ || ra.addend != rb.addend {
				return false
			}
			if ra.target != rb.target && !bytes.Equal(norm(ra.str), norm(rb.str)) {
				return false
			}
			if ra.target != rb.target && (ra.str == nil || rb.str == nil) {
				return false
			}
		}
	}
	return true
}

// fileLine is a source file's place as __FILE__ ":" __LINE__ spell it.
var fileLine = regexp.MustCompile(`([A-Za-z0-9_.-]+\.[chS]):[0-9]+`)

type funcReloc struct {
	off    uint64
	typ    uint32
	addend int64
	target string // symbol name, or section name + string for string targets
	str    []byte // the string a string-section target points at
}

type funcBody struct {
	code   []byte
	relocs []funcReloc
	opaque bool // refers to data this comparison cannot judge
}

// loadFuncs reads every function of an object: its bytes and relocations,
// string targets resolved to the strings.
func loadFuncs(obj []byte) (map[string]*funcBody, error) {
	f, err := elf.NewFile(bytes.NewReader(obj))
	if err != nil {
		return nil, err
	}
	pp, err := readPost(Unit{Post: obj})
	if err != nil {
		return nil, err
	}
	out := map[string]*funcBody{}
	for _, y := range pp.syms {
		if elf.ST_TYPE(y.Info) != elf.STT_FUNC || y.Section == elf.SHN_UNDEF || int(y.Section) >= len(f.Sections) {
			continue
		}
		s := f.Sections[y.Section]
		d, err := s.Data()
		if err != nil || y.Value+y.Size > uint64(len(d)) {
			continue
		}
		fb := &funcBody{code: append([]byte(nil), d[y.Value:y.Value+y.Size]...)}
		for _, r := range pp.relocs[int(y.Section)] {
			if r.off < y.Value || r.off >= y.Value+y.Size {
				continue
			}
			fr := funcReloc{off: r.off - y.Value, typ: r.typ, addend: r.addend}
			sec, off, sym := pp.place(r)
			switch {
			case sym == nil:
				return nil, fmt.Errorf("bad relocation")
			case sec != nil && elf.ST_TYPE(sym.Info) == elf.STT_SECTION && sec.Flags&elf.SHF_STRINGS != 0:
				sd, _ := sec.Data()
				if t := elf.R_X86_64(r.typ); t == elf.R_X86_64_PC32 || t == elf.R_X86_64_PLT32 {
					off += 4 // lea/mov str(%rip): the displacement ends the instruction
				}
				if off >= 0 && off < int64(len(sd)) {
					str := sd[off:]
					if n := bytes.IndexByte(str, 0); n >= 0 {
						str = str[:n]
					}
					fr.str = str
				}
				fr.target = sec.Name + "\x00" + string(fr.str)
				fr.addend = 0 // the string's place in the section moves with its length
			case sec == nil || sec.Flags&elf.SHF_EXECINSTR != 0:
				fr.target = sym.Name // a function (its own change is its own)
			default:
				// Data: its name (the section's for a section symbol)
				// and its bytes; data with pointers of its own is not
				// compared here, so never "line only".
				if len(pp.relocs[int(sym.Section)]) > 0 {
					fb.opaque = true
					continue
				}
				sd, _ := sec.Data()
				lo, hi := uint64(0), uint64(len(sd))
				if elf.ST_TYPE(sym.Info) != elf.STT_SECTION {
					lo, hi = sym.Value, min(sym.Value+sym.Size, hi)
				}
				if lo > hi {
					fb.opaque = true
					continue
				}
				fr.target = fmt.Sprintf("%s\x00%s\x00%x", sec.Name, sym.Name, sd[lo:hi])
			}
			fb.relocs = append(fb.relocs, fr)
		}
		out[y.Name] = fb
	}
	return out, nil
}
