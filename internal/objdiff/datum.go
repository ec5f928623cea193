package objdiff

import (
	"bytes"
	"debug/elf"
	"fmt"
	"sort"
	"strconv"

	"livesplice/internal/update"
)

// objectDatum marks a reference to a named object in read-only data as a
// datum: the object's bytes (size 0: up to the next cut).
func (o *object) objectDatum(t target, place0 int64) target {
	if !rodata(t.sec) || t.sec.data == nil {
		return t
	}
	start, end := y2i(t.sym.value), y2i(t.sym.value+t.sym.size)
	if t.sym.size == 0 {
		var ok bool
		if ok, start, end = o.piece(t.sec, start); !ok {
			return t
		}
	}
	if start < 0 || end > int64(len(t.sec.data)) || start >= end {
		return t
	}
	t.dat, t.start, t.end, t.place = true, start, end, place0
	return t
}

// piece delimits the anonymous datum at off in a read-only section that
// is not mergeable (gcc -O0 puts string literals and constants in .rodata;
// a jump table has a section of its own): from off to the next place
// anything in the object refers to or names. A piece without relocations
// that is a string followed by zeros (alignment padding) ends at its NUL,
// any other without its trailing zeros.
func (o *object) piece(s *section, off int64) (ok bool, start, end int64) {
	if s.data == nil || off < 0 || off >= int64(len(s.data)) {
		return false, 0, 0
	}
	cuts := o.cutsOf(s)
	i := sort.Search(len(cuts), func(i int) bool { return cuts[i] > off })
	end = int64(len(s.data))
	if i < len(cuts) {
		end = cuts[i]
	}
	for _, r := range s.relocs {
		if int64(r.off) >= off && int64(r.off) < end {
			return true, off, end
		}
	}
	if nul := bytes.IndexByte(s.data[off:end], 0); nul >= 0 {
		rest := s.data[off+int64(nul)+1 : end]
		if len(bytes.Trim(rest, "\x00")) == 0 {
			return true, off, off + int64(nul) + 1
		}
	}
	// Other data: without its trailing zeros, which may be alignment
	// padding before the next piece here, but not in the running
	// program's build (without -fdata-sections, named constants sit
	// between the pieces).
	for end > off+1 && s.data[end-1] == 0 {
		end--
	}
	return true, off, end
}

// cutsOf returns, sorted, the offsets in s that relocations of the object
// refer to (a PC-relative field counted as the end of its instruction) or
// symbols name: the boundaries of its anonymous data.
func (o *object) cutsOf(s *section) []int64 {
	if c, ok := o.cuts[s]; ok {
		return c
	}
	set := map[int64]bool{}
	for _, y := range s.syms {
		if y.typ != elf.STT_SECTION && y.typ != elf.STT_FILE {
			set[y2i(y.value)] = true
			if y.size > 0 {
				set[y2i(y.value+y.size)] = true
			}
		}
	}
	for _, from := range o.sections {
		for _, r := range from.relocs {
			if r.sym == nil || r.sym.sec != s {
				continue
			}
			p := r.addend + y2i(r.sym.value)
			if update.RelocIsPCRel(r.typ) {
				p += 4
			}
			set[p] = true
		}
	}
	c := make([]int64, 0, len(set))
	for p := range set {
		c = append(c, p)
	}
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	if o.cuts == nil {
		o.cuts = map[*section][]int64{}
	}
	o.cuts[s] = c
	return c
}

// datumRelocs returns the relocations whose fields lie in [start, end) of s.
func datumRelocs(s *section, start, end int64) []reloc {
	var out []reloc
	for _, r := range s.relocs {
		if int64(r.off) >= start && int64(r.off) < end {
			out = append(out, r)
		}
	}
	return out
}

// sameDatum compares two read-only data by content: the same bytes outside
// relocation fields, relocations to the same targets, and the reference at
// the same place in it.
func (d *differ) sameDatum(a, b target) bool {
	if a.end-a.start != b.end-b.start || a.place-a.start != b.place-b.start {
		return false
	}
	if d.depth > 4 {
		return false // data referring to data this deep: call it changed
	}
	d.depth++
	defer func() { d.depth-- }()
	ma, mb := a.sec.masked(), b.sec.masked()
	if !bytes.Equal(ma[a.start:a.end], mb[b.start:b.end]) {
		return false
	}
	ra, rb := datumRelocs(a.sec, a.start, a.end), datumRelocs(b.sec, b.start, b.end)
	if len(ra) != len(rb) {
		return false
	}
	for i := range ra {
		if int64(ra[i].off)-a.start != int64(rb[i].off)-b.start || ra[i].typ != rb[i].typ {
			return false
		}
		if !d.sameTarget(d.pre.resolve(ra[i]), d.post.resolve(rb[i])) {
			return false
		}
	}
	return true
}

// preDatum is the update's record of the read-only datum that the pre code
// reaches through the relocation at off (in the pre code): run-pre
// matching compares it with the running program's bytes.
func preDatum(t target, off uint64) *update.Datum {
	if !t.dat || t.sec.data == nil || t.start < 0 || t.end > int64(len(t.sec.data)) || t.start >= t.end {
		return nil
	}
	dt := &update.Datum{Reloc: off, At: t.start - t.place, Name: datumName(t), Data: append([]byte{}, t.sec.data[t.start:t.end]...)}
	for _, r := range datumRelocs(t.sec, t.start, t.end) {
		w := uint64(update.RelocWidth(r.typ))
		if w == 0 {
			w = 8
		}
		w = min(w, uint64(t.end)-r.off)
		dt.Holes = append(dt.Holes, update.Hole{Offset: r.off - uint64(t.start), Size: w})
	}
	return dt
}

// datumName describes a datum for messages: a string literal quoted,
// else the object's name or the section and offset.
func datumName(t target) string {
	b := t.sec.data[t.start:t.end]
	if len(b) > 0 && b[len(b)-1] == 0 && printable(b[:len(b)-1]) && len(datumRelocs(t.sec, t.start, t.end)) == 0 {
		q := string(b[:len(b)-1])
		if len(q) > 48 {
			q = q[:45] + "..."
		}
		return "string " + strconv.Quote(q)
	}
	if t.kind == tSymbol && t.sym != nil {
		return t.sym.name
	}
	return fmt.Sprintf("%s+%#x", t.sec.name, t.start)
}

func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 && c != '\n' && c != '\t' && c != '\r' || c == 0x7f {
			return false
		}
	}
	return true
}
