package objdiff

import (
	"encoding/binary"
	"sort"
	"strings"

	"livesplice/internal/update"
)

// frames carries the CIEs and FDEs of the object's carried code sections
// into one new .eh_frame section of the update. Call frame information only
// helps unwinders: an object whose .eh_frame cannot be read (another
// compiler's encoding) simply gets none, and the update is still valid.
func (d *differ) frames() {
	var eh *section
	for _, s := range d.post.sections {
		if s.name == ".eh_frame" {
			eh = s
		}
	}
	if eh == nil || len(d.carried) == 0 {
		return
	}
	relAt := map[uint64]reloc{}
	for _, r := range eh.relocs {
		relAt[r.off] = r
	}
	type entry struct{ off, end uint64 }
	var fdes []entry
	cies := map[uint64]entry{}
	data := eh.data
	for off := uint64(0); off+8 <= uint64(len(data)); {
		n := uint64(binary.LittleEndian.Uint32(data[off:]))
		if n == 0 {
			break
		}
		if n == 0xffffffff || off+4+n > uint64(len(data)) || n < 4 {
			return // 64-bit DWARF or damaged: no frames
		}
		e := entry{off, off + 4 + n}
		if id := binary.LittleEndian.Uint32(data[off+4:]); id == 0 {
			cies[off] = e
		} else {
			fdes = append(fdes, e)
		}
		off = e.end
	}
	var out []byte
	var relocs []update.Reloc
	placed := map[uint64]uint64{} // CIE offset in eh -> offset in out
	copyEntry := func(e entry) (uint64, bool) {
		at := uint64(len(out))
		out = append(out, data[e.off:e.end]...)
		var offs []uint64
		for o := range relAt {
			if o >= e.off && o < e.end {
				offs = append(offs, o)
			}
		}
		sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
		for _, o := range offs {
			r := relAt[o]
			var sym int
			var add int64
			y := r.sym
			switch {
			case y.sec == nil || y.undef:
				sym, add = d.b.symbol(update.Symbol{Kind: update.SymGlobal, Name: y.name}), r.addend
			case y.sec.exec():
				i, ok := d.carried[y.sec]
				if !ok {
					return 0, false
				}
				sym, add = d.b.symbol(update.Symbol{Kind: update.SymSection, Section: i}), int64(y.value)+r.addend
			default:
				// An LSDA (.gcc_except_table) or a personality routine's
				// DW.ref word: the update carries its own copy, so that
				// nothing hidden in the running program must be found.
				if y.sec.write() && !strings.HasPrefix(y.sec.name, ".data.rel.local.DW.ref.") {
					return 0, false
				}
				i, err := d.carry(y.sec)
				if err != nil {
					return 0, false
				}
				sym, add = d.b.symbol(update.Symbol{Kind: update.SymSection, Section: i}), int64(y.value)+r.addend
			}
			relocs = append(relocs, update.Reloc{Offset: at + o - e.off, Type: r.typ, Symbol: sym, Addend: add})
		}
		return at, true
	}
	for _, f := range fdes {
		r, ok := relAt[f.off+8] // pc_begin
		if !ok || r.sym.sec == nil {
			continue
		}
		if _, carried := d.carried[r.sym.sec]; !carried || !r.sym.sec.exec() {
			continue
		}
		cieOff := f.off + 4 - uint64(binary.LittleEndian.Uint32(data[f.off+4:]))
		cie, ok := cies[cieOff]
		if !ok {
			return
		}
		at, ok := placed[cieOff]
		if !ok {
			if at, ok = copyEntry(cie); !ok {
				return
			}
			placed[cieOff] = at
		}
		fat, ok := copyEntry(f)
		if !ok {
			return
		}
		binary.LittleEndian.PutUint32(out[fat+4:], uint32(fat+4-at))
	}
	if len(out) == 0 {
		return
	}
	out = append(out, 0, 0, 0, 0)
	d.b.t.Sections = append(d.b.t.Sections, update.Section{Name: update.EHFrameName, Kind: update.KindRodata,
		Align: 8, Size: uint64(len(out)), Data: out, Relocs: relocs})
}
