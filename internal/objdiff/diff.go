// Package objdiff compares the pre and post builds of each object file and
// turns what changed into an update target: replaced and new functions with
// their post code, the pre code of every replaced function for run-pre
// matching, the data they need and their relocations in symbolic form.
package objdiff

import (
	"debug/elf"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"livesplice/internal/layout"
	"livesplice/internal/update"
)

// ErrUnsupported is wrapped by every refusal of a change that cannot be
// spliced into running code.
var ErrUnsupported = errors.New("change cannot be spliced")

// RefusedError names the file, symbol and reason of a refused change.
type RefusedError struct {
	File, Symbol, Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s: %s: %s", e.File, e.Symbol, e.Reason)
}

// Unwrap lets errors.Is(err, ErrUnsupported) match.
func (e *RefusedError) Unwrap() error { return ErrUnsupported }

// Builder collects the changes of every object linked into one ELF output.
type Builder struct {
	t       update.Target
	keys    map[string]int  // symbol identity -> index in t.Symbols
	defs    map[string]int  // global names defined by carried sections -> symbol index
	handled map[string]bool // types marked LIVESPLICE_LAYOUT_HANDLED
	layouts []layoutChange  // layout changes seen, judged by LayoutErr
	// SetTrees: the source trees, for the reasons (source.go)
	preRoot, postRoot string
	touchedFiles      map[string]*touched
	sourceErr         error // the first diff of a source file that failed
}

// layoutChange is a changed type layout that changed code of file uses.
type layoutChange struct {
	file string
	c    layout.Change
}

// NewBuilder starts the target for the output at path (relative to the tree).
func NewBuilder(path, soname, preBuildID string) *Builder {
	return &Builder{
		t:       update.Target{Path: path, Soname: soname, PreBuildID: preBuildID},
		keys:    map[string]int{},
		defs:    map[string]int{},
		handled: map[string]bool{},
	}
}

// Target returns the finished target. References from carried code to a
// global that the update itself defines go to the update's copy.
func (b *Builder) Target() *update.Target {
	t := b.t
	for si := range t.Sections {
		for ri, r := range t.Sections[si].Relocs {
			y := t.Symbols[r.Symbol]
			if y.Kind != update.SymGlobal {
				continue
			}
			if d, ok := b.defs[y.Name]; ok {
				t.Sections[si].Relocs[ri].Symbol = d
			}
		}
	}
	return &t
}

// Changed reports whether any function was added or replaced, or the
// update has hooks (custom code only is a valid update).
func (b *Builder) Changed() bool { return len(b.t.Functions) > 0 || len(b.t.Hooks) > 0 }

// References reports whether carried code refers to the global name, which
// nothing carried defines yet.
func (b *Builder) References(name string) bool {
	if _, ok := b.defs[name]; ok {
		return false
	}
	_, ok := b.keys[symbolKey(update.Symbol{Kind: update.SymGlobal, Name: name})]
	return ok
}

// LayoutErr refuses the first layout change of a struct or union that
// changed code uses, unless the patch marked it handled
// (LIVESPLICE_LAYOUT_HANDLED, in any of the output's objects).
func (b *Builder) LayoutErr() error {
	for _, l := range b.layouts {
		if b.handled[l.c.Type] || b.handled[strings.TrimPrefix(strings.TrimPrefix(l.c.Type, "struct "), "union ")] {
			continue
		}
		return &RefusedError{File: l.file, Symbol: l.c.Type, Reason: fmt.Sprintf("%s; objects of it in the running program have the old layout: keep new fields in a shadow variable (livesplice_shadow_get_or_alloc) and leave the type as it is, or convert existing objects in hooks and mark the change with LIVESPLICE_LAYOUT_HANDLED(%s) (docs/custom-code.md)",
			strings.TrimPrefix(l.c.String(), l.c.Type+": "), l.c.Type)}
	}
	return nil
}

func (b *Builder) symbol(y update.Symbol) int {
	key := symbolKey(y)
	if i, ok := b.keys[key]; ok {
		return i
	}
	b.t.Symbols = append(b.t.Symbols, y)
	b.keys[key] = len(b.t.Symbols) - 1
	return len(b.t.Symbols) - 1
}

func symbolKey(y update.Symbol) string {
	k := fmt.Sprintf("%s\x00%s\x00%s\x00%d\x00%d", y.Kind, y.Name, y.File, y.Section, y.Offset)
	if y.IsTLS() {
		k += "\x00" + y.Type // one symbol per access model: each has its own value
	}
	return k
}

// differ compares one object pair.
type differ struct {
	rel       string
	pre, post *object
	pair      map[*section]*section // post -> pre
	rename    map[*symbol]*symbol   // post local symbol -> pre symbol
	depth     int                   // nesting of sameDatum (data referring to data)
	different map[*section]bool     // post sections that differ from their pre pair
	carried   map[*section]int      // post section -> index in the update's sections
	changed   []string              // names of the replaced and new functions
	b         *Builder
	keep      func(name, file string) bool // AddObjectKeeping's
}

var numSuffix = regexp.MustCompile(`\.[0-9]+$`)

// AddObject diffs one object: pre is nil for an object only the post tree has.
func (b *Builder) AddObject(rel string, pre, post []byte) error {
	return b.AddObjectKeeping(rel, pre, post, nil)
}

// AddObjectKeeping is AddObject leaving the running version of every
// replaced function keep(name, file) accepts (file: "" for a global) in
// place: create uses it for callers whose code only GCC's -fipa-ra
// changed. Carried code that calls such a static function gets the post
// copy of it.
func (b *Builder) AddObjectKeeping(rel string, pre, post []byte, keep func(name, file string) bool) error {
	d := &differ{rel: rel, b: b, pair: map[*section]*section{}, rename: map[*symbol]*symbol{},
		different: map[*section]bool{}, carried: map[*section]int{}, keep: keep}
	var err error
	if d.post, err = loadObject(rel, post); err != nil {
		return err
	}
	if pre != nil {
		if d.pre, err = loadObject(rel, pre); err != nil {
			return err
		}
	} else {
		d.pre = &object{path: rel, file: d.post.file, byName: map[string][]*section{}}
	}
	for _, s := range d.post.sections {
		if strings.HasPrefix(s.name, ".gnu.lto_") {
			return d.refuse(s.name, "object built with -flto: its code is made at link time, across units, so no unit can be diffed or spliced; build without -flto")
		}
	}
	d.correlate()
	d.compare()
	if err := d.checkData(); err != nil {
		return err
	}
	if err := d.emit(); err != nil {
		return err
	}
	if err := d.hooks(); err != nil {
		return err
	}
	d.frames()
	if pre != nil && len(d.changed) > 0 {
		return d.checkLayout(pre, post)
	}
	return nil
}

func (d *differ) fileName() string {
	if d.post.file != "" {
		return d.post.file
	}
	return d.rel
}

func (d *differ) refuse(sym, format string, args ...any) error {
	return &RefusedError{File: d.fileName(), Symbol: sym, Reason: fmt.Sprintf(format, args...)}
}

func namedLocal(y *symbol) bool {
	return y.bind == elf.STB_LOCAL && y.name != "" && (y.typ == elf.STT_FUNC || y.typ == elf.STT_OBJECT || y.typ == elf.STT_NOTYPE || y.typ == elf.STT_TLS) && y.sec != nil
}

// correlate pairs post sections and local symbols with their pre twins: by
// name, then through GCC's renumbered statics (counter.1 in post is
// counter.0 in pre when it is the only candidate).
func (d *differ) correlate() {
	preLocal := map[string]*symbol{}
	for _, y := range d.pre.symbols {
		if y != nil && namedLocal(y) {
			preLocal[y.name] = y
		}
	}
	postLocal := map[string]bool{}
	for _, y := range d.post.symbols {
		if y != nil && namedLocal(y) {
			postLocal[y.name] = true
		}
	}
	stripped := map[string][]*symbol{}
	for name, y := range preLocal {
		if !postLocal[name] {
			stripped[numSuffix.ReplaceAllString(name, "")] = append(stripped[numSuffix.ReplaceAllString(name, "")], y)
		}
	}
	for _, y := range d.post.symbols {
		if y == nil || !namedLocal(y) {
			continue
		}
		if p, ok := preLocal[y.name]; ok {
			d.rename[y] = p
			continue
		}
		if c := stripped[numSuffix.ReplaceAllString(y.name, "")]; len(c) == 1 && c[0].typ == y.typ {
			d.rename[y] = c[0]
		}
	}
	for name, ps := range d.post.byName {
		qs := d.pre.byName[name]
		for i, s := range ps {
			if i < len(qs) {
				d.pair[s] = qs[i]
			}
		}
	}
	// Sections named after a renumbered static pair through its symbol.
	for _, s := range d.post.sections {
		if _, ok := d.pair[s]; ok || ignoredSection(s) {
			continue
		}
		if y := s.symbolAt(0); y != nil {
			if p, ok := d.rename[y]; ok && p.sec != nil {
				d.pair[s] = p.sec
			}
		}
	}
}

// targetKind classifies what a relocation points at.
type targetKind int

const (
	tUndef   targetKind = iota // undefined symbol: by name
	tSymbol                    // a named symbol defined here
	tString                    // a string in a mergeable string section
	tConst                     // a constant in a mergeable constant section
	tSection                   // an anonymous place in a section
	tOther                     // absolute or common: compared by name
)

type target struct {
	kind   targetKind
	sym    *symbol
	sec    *section
	addend int64 // relative to sym (tSymbol) or section (others)
	bytes  []byte
	// A read-only datum (dat): the bytes [start, end) of sec that the
	// reference reaches (a string with its NUL, a constant, an object, an
	// anonymous piece of .rodata), and place0, the section offset the
	// relocation names before any PC bias (its symbol's value + addend).
	dat               bool
	start, end, place int64
}

// pcBias lists the distances from a PC-relative field to the end of its
// instruction for the immediates x86-64 can have after it.
var pcBias = []int64{4, 5, 6, 8}

func (o *object) resolve(r reloc) target {
	y := r.sym
	switch {
	case y.undef:
		return target{kind: tUndef, sym: y, addend: r.addend}
	case y.special || y.sec == nil:
		return target{kind: tOther, sym: y, addend: r.addend}
	case y.typ != elf.STT_SECTION && !y.sec.mergeable():
		return o.objectDatum(target{kind: tSymbol, sym: y, sec: y.sec, addend: r.addend}, r.addend+y2i(y.value))
	}
	// A section symbol, or a label (.LC0) in a mergeable section: what
	// counts is the content at the place, not the label's name.
	s := y.sec
	pc := update.RelocIsPCRel(r.typ)
	place := func(k int64) int64 { return r.addend + y2i(y.value) + k }
	// Addends below are relative to the section, not to the label: a
	// reference through .LC1 must keep .LC1's offset in the section, or the
	// new code points at the section's first string.
	if s.strings() {
		k := int64(0)
		if pc {
			k = 4
		}
		str, ok := s.cstring(place(k))
		t := target{kind: tString, sec: s, addend: place(0), bytes: str}
		if ok {
			t.dat, t.start, t.end, t.place = true, place(k), min(place(k)+int64(len(str))+1, int64(len(s.data))), place(0)
		}
		return t
	}
	if s.mergeable() && s.entsz > 0 {
		k := int64(0)
		if pc {
			// The constant starts at the end of the instruction's field
			// plus any immediate after it: the first bias that lands on
			// an entry (vector instructions with an imm8, ...).
			k = 4
			for _, b := range pcBias {
				if p := place(b); p >= 0 && p%int64(s.entsz) == 0 && p < int64(len(s.data)) {
					k = b
					break
				}
			}
		}
		off := place(k)
		t := target{kind: tConst, sec: s, addend: place(0)}
		// gcc may address a part of an entry (a label in the middle of
		// the last one, for a 2-byte load): up to the section's end.
		if off >= 0 && off < int64(len(s.data)) {
			end := min(off+int64(s.entsz), int64(len(s.data)))
			t.bytes = s.data[off:end]
			t.dat, t.start, t.end, t.place = true, off, end, place(0)
		}
		return t
	}
	// A reference through a section symbol to a named object: gas turns
	// references to local symbols into these.
	if !rodata(s) || s.symbolAt(0) != nil {
		ks := []int64{0}
		if pc {
			ks = pcBias
		}
		for _, k := range ks {
			if n := s.symbolAt(uint64(max(place(k), 0))); n != nil && place(k) >= 0 {
				return o.objectDatum(target{kind: tSymbol, sym: n, sec: s, addend: place(0) - y2i(n.value)}, place(0))
			}
		}
		// A place just outside the only object of a data section still
		// refers to that object: gcc addresses an array's end (the bound
		// of a loop, table+256) or table-4 (for table[i-1]) with absolute
		// relocations in non-PIE code; -fdata-sections gives every
		// variable its own section.
		if n := s.onlyObject(); n != nil && !s.exec() {
			return o.objectDatum(target{kind: tSymbol, sym: n, sec: s, addend: place(0) - y2i(n.value)}, place(0))
		}
	}
	t := target{kind: tSection, sec: s, addend: place(0)}
	if rodata(s) {
		k := int64(0)
		if pc {
			k = 4
		}
		t.dat, t.start, t.end = o.piece(s, place(k))
		t.place = place(0)
	}
	return t
}

// onlyObject returns the section's object symbol if it defines exactly one
// named symbol.
func (s *section) onlyObject() *symbol {
	var only *symbol
	for _, y := range s.syms {
		if y.typ == elf.STT_SECTION || y.typ == elf.STT_FILE || y.name == "" {
			continue
		}
		if only != nil || y.typ != elf.STT_OBJECT {
			return nil
		}
		only = y
	}
	return only
}

func y2i(v uint64) int64 { return int64(v) }

// rodata reports read-only data: copied into the update when new code uses it.
func rodata(s *section) bool { return s.alloc() && !s.write() && !s.exec() && !s.tls() }

// cold reports a GCC split-off fragment (foo.cold): entered by jumps from
// its parent, never redirected itself, so it travels with the parent.
func cold(s *section) bool {
	if !s.exec() {
		return false
	}
	for _, y := range s.syms {
		if strings.Contains(y.name, ".cold") {
			return true
		}
	}
	return false
}

// deep reports a section whose content decides whether a reference to it
// is the same: the place itself is carried, not resolved by name.
func deep(s *section) bool { return rodata(s) || cold(s) }

func (d *differ) preName(y *symbol) string {
	if p, ok := d.rename[y]; ok {
		return p.name
	}
	return y.name
}

// sameTarget compares a pre and a post relocation target.
func (d *differ) sameTarget(a, b target) bool {
	if a.kind != b.kind {
		return false
	}
	switch b.kind {
	case tUndef, tOther:
		return a.sym.name == b.sym.name && a.addend == b.addend
	case tString, tConst:
		if a.bytes == nil && b.bytes == nil {
			// A place this object cannot read: the same place of the
			// same (paired, unchanged) section.
			return d.pair[b.sec] == a.sec && a.addend == b.addend && !d.different[b.sec]
		}
		return string(a.bytes) == string(b.bytes) && a.bytes != nil
	case tSection:
		if a.dat && b.dat {
			// An anonymous piece of read-only data (-O0 string literals
			// and constants in .rodata, a jump table): what counts is its
			// content, not where in the section it lies, which any change
			// to the strings before it moves (kpatch correlates string
			// sections for the same reason).
			return d.sameDatum(a, b)
		}
		return d.pair[b.sec] == a.sec && a.addend == b.addend && !d.different[b.sec]
	case tSymbol:
		if a.dat && b.dat {
			// Read-only data is what it holds, whatever its name: GCC
			// renumbers its switch tables (CSWTCH.759 -> CSWTCH.760) and
			// static constants when anything before them changes.
			return d.sameDatum(a, b)
		}
		if d.preName(b.sym) != a.sym.name || a.addend != b.addend {
			return false
		}
		if b.sym.bind == elf.STB_LOCAL {
			if p, ok := d.rename[b.sym]; !ok || p != a.sym {
				return false
			}
		}
		if deep(b.sec) {
			return d.pair[b.sec] == a.sec && !d.different[b.sec]
		}
		return true
	}
	return false
}

// sameSection compares two sections outside their relocation fields, and
// their relocations by target.
func (d *differ) sameSection(a, b *section) bool {
	if a.size != b.size || a.typ != b.typ || (a.flags&^elf.SHF_GROUP) != (b.flags&^elf.SHF_GROUP) || len(a.relocs) != len(b.relocs) {
		return false
	}
	if b.typ == elf.SHT_NOBITS {
		return true
	}
	ma, mb := a.masked(), b.masked()
	if string(ma) != string(mb) {
		return false
	}
	for i := range a.relocs {
		ra, rb := a.relocs[i], b.relocs[i]
		if ra.off != rb.off || ra.typ != rb.typ {
			return false
		}
		if !d.sameTarget(d.pre.resolve(ra), d.post.resolve(rb)) {
			return false
		}
	}
	return true
}

// masked returns the section's bytes with every relocation field zeroed,
// computed once: the fixed-point comparison asks again on every pass.
func (s *section) masked() []byte {
	if s.mask != nil || s.data == nil {
		return s.mask
	}
	m := append([]byte(nil), s.data...)
	for _, r := range s.relocs {
		w := uint64(update.RelocWidth(r.typ))
		if w == 0 {
			w = 4
		}
		for i := r.off; i < r.off+w && i < uint64(len(m)); i++ {
			m[i] = 0
		}
	}
	s.mask = m
	return m
}

// compare marks every differing post section, to a fixed point: a section
// that refers to a differing deep section differs too.
func (d *differ) compare() {
	var secs []*section
	for _, s := range d.post.sections {
		if ignoredSection(s) {
			continue
		}
		if _, ok := d.pair[s]; !ok {
			d.different[s] = true
			continue
		}
		secs = append(secs, s)
	}
	for changed := true; changed; {
		changed = false
		for _, s := range secs {
			if !d.different[s] && !d.sameSection(d.pair[s], s) {
				d.different[s] = true
				changed = true
			}
		}
	}
}

// checkData refuses changes that a code splice cannot carry.
func (d *differ) checkData() error {
	for _, s := range d.post.sections {
		if ignoredSection(s) || !d.different[s] {
			continue
		}
		p, paired := d.pair[s]
		name := s.name
		if y := s.symbolAt(0); y != nil {
			name = y.name
		}
		switch {
		case s.tls() && !paired:
			return d.refuse(name, "new thread-local variable (section %s): the running threads have no storage for it (keep per-thread state in a shadow variable keyed by the thread)", s.name)
		case s.tls():
			return d.refuse(name, "thread-local variable changed (section %s): every running thread already holds its own copy", s.name)
		case s.typ == elf.SHT_INIT_ARRAY || s.typ == elf.SHT_FINI_ARRAY || s.typ == elf.SHT_PREINIT_ARRAY ||
			strings.HasPrefix(s.name, ".ctors") || strings.HasPrefix(s.name, ".dtors"):
			return d.refuse(s.name, "constructors or destructors changed; they already ran in the running program")
		case s.exec() || rodata(s):
			// carried as new code or data
		case s.write() && paired:
			if p.size != s.size {
				return d.refuse(name, "size of an existing variable changed from %d to %d bytes; existing objects cannot grow (use a shadow variable)", p.size, s.size)
			}
			return d.refuse(name, "initial value of an existing variable changed (section %s); the running program already holds its value", s.name)
		case s.write():
			// A new section, but maybe not a new variable: one whose
			// initial value changes to or from zero moves between .bss
			// and .data.
			if y := s.symbolAt(0); y != nil {
				if old := d.preVariable(y); old != nil {
					return d.refuse(name, "initial value of an existing variable changed (section %s, was %s); the running program already holds its value", s.name, old.sec.name)
				}
			}
			// new variable
		default:
			return d.refuse(s.name, "changed section of type %v that nothing can carry", s.typ)
		}
	}
	return nil
}

// preVariable finds the pre build's variable that post symbol y (in an
// unpaired section) is: a global of the same name, or a static of the same
// name and file.
func (d *differ) preVariable(y *symbol) *symbol {
	if y.typ != elf.STT_OBJECT || y.name == "" {
		return nil
	}
	if y.bind != elf.STB_LOCAL {
		if p := d.pre.global(y.name); p != nil && p.sec != nil && p.sec.write() {
			return p
		}
		return nil
	}
	if p, ok := d.rename[y]; ok && p.sec != nil && p.sec.write() {
		return p
	}
	for _, p := range d.pre.symbols {
		if p != nil && p.bind == elf.STB_LOCAL && p.typ == elf.STT_OBJECT && p.name == y.name && p.sec != nil && p.sec.write() {
			return p
		}
	}
	return nil
}

func funcSyms(s *section) []*symbol {
	var out []*symbol
	for _, y := range s.syms {
		if y.typ == elf.STT_FUNC && y.name != "" {
			out = append(out, y)
		}
	}
	return out
}

// emit adds the object's replaced and new functions, and everything they
// reference, to the target.
func (d *differ) emit() error {
	type fn struct {
		sym    *symbol
		pre    *symbol
		status string
	}
	var fns []fn
	for _, s := range d.post.sections {
		if ignoredSection(s) || !s.exec() || !d.different[s] || cold(s) {
			continue
		}
		for _, y := range funcSyms(s) {
			var p *symbol
			if y.bind == elf.STB_LOCAL {
				p = d.rename[y]
			} else {
				p = d.pre.global(y.name)
			}
			if p != nil && p.typ == elf.STT_FUNC && p.sec != nil {
				fns = append(fns, fn{y, p, update.StatusReplaced})
			} else {
				fns = append(fns, fn{y, nil, update.StatusNew})
			}
		}
	}
	if d.keep != nil {
		fns = slices.DeleteFunc(fns, func(f fn) bool {
			file := ""
			if f.sym.bind == elf.STB_LOCAL {
				file = d.fileName()
			}
			return f.status == update.StatusReplaced && d.keep(f.pre.name, file)
		})
	}
	if len(fns) == 0 {
		return nil
	}
	for _, f := range fns {
		if _, err := d.carry(f.sym.sec); err != nil {
			return err
		}
	}
	// Without the trees, why() guesses inlined changes from the code.
	var inl map[string][]string
	if d.b.postRoot == "" {
		var changed []*symbol
		for _, f := range fns {
			changed = append(changed, f.sym)
		}
		inl = d.inlinedChanges(changed)
	}
	for _, f := range fns {
		d.changed = append(d.changed, f.sym.name)
		uf := update.Function{Name: f.sym.name, Status: f.status, Section: d.carried[f.sym.sec], Size: f.sym.size}
		uf.Why = d.why(f.sym, f.pre, inl)
		if f.sym.bind == elf.STB_LOCAL {
			uf.File = d.fileName()
		}
		if f.sym.value != 0 {
			return d.refuse(f.sym.name, "function does not start its section (built without -ffunction-sections?)")
		}
		if f.status == update.StatusReplaced {
			uf.Name = f.pre.name
			uf.Symbol = d.b.symbol(d.identity(f.pre, d.pre))
			code, err := d.preCode(f.pre)
			if err != nil {
				return err
			}
			uf.Pre = code
		} else {
			uf.Symbol = -1
		}
		d.b.t.Functions = append(d.b.t.Functions, uf)
	}
	return nil
}

func (o *object) global(name string) *symbol {
	for _, y := range o.symbols {
		if y != nil && y.name == name && y.bind != elf.STB_LOCAL && !y.undef {
			return y
		}
	}
	return nil
}

// identity is the symbolic name of a symbol of the running program.
func (d *differ) identity(y *symbol, o *object) update.Symbol {
	typ := ""
	switch y.typ {
	case elf.STT_FUNC:
		typ = "func"
	case elf.STT_OBJECT:
		typ = "object"
	}
	if y.bind == elf.STB_LOCAL {
		return update.Symbol{Kind: update.SymLocal, Name: y.name, File: o.file, Type: typ}
	}
	return update.Symbol{Kind: update.SymGlobal, Name: y.name, Type: typ}
}

// carry copies a post section into the update (once) with its relocations,
// carrying what it references in turn.
func (d *differ) carry(s *section) (int, error) {
	if i, ok := d.carried[s]; ok {
		return i, nil
	}
	kind := update.KindRodata
	switch {
	case s.exec():
		kind = update.KindText
	case s.typ == elf.SHT_NOBITS:
		kind = update.KindBss
	case s.write():
		kind = update.KindData
	}
	us := update.Section{Name: s.name, Kind: kind, Align: min(max(s.align, 1), 4096), Size: s.size}
	if kind != update.KindBss {
		us.Data = append([]byte{}, s.data...)
	}
	idx := len(d.b.t.Sections)
	d.b.t.Sections = append(d.b.t.Sections, us)
	d.carried[s] = idx
	for _, y := range s.syms {
		if y.name == "" || y.typ == elf.STT_SECTION || y.typ == elf.STT_FILE || strings.HasPrefix(y.name, ".L") {
			continue
		}
		def := update.Def{Name: y.name, Offset: y.value, Size: y.size, Func: y.typ == elf.STT_FUNC}
		if y.bind == elf.STB_LOCAL {
			def.File = d.post.file
		} else {
			d.b.defs[y.name] = d.b.symbol(update.Symbol{Kind: update.SymSection, Section: idx, Offset: y.value})
		}
		d.b.t.Sections[idx].Defs = append(d.b.t.Sections[idx].Defs, def)
	}
	var relocs []update.Reloc
	for _, r := range s.relocs {
		if tlsReloc(r) {
			y, err := d.tlsSymbol(r, d.post, s.name)
			if err != nil {
				return 0, err
			}
			relocs = append(relocs, update.Reloc{Offset: r.off, Type: r.typ, Symbol: d.b.symbol(y), Addend: r.addend})
			continue
		}
		if update.RelocWidth(r.typ) == 0 {
			return 0, d.refuse(r.sym.name, "relocation type %v in %s is not supported", elf.R_X86_64(r.typ), s.name)
		}
		t := d.post.resolve(r)
		sym, add, err := d.postSymbol(t, r)
		if err != nil {
			return 0, err
		}
		relocs = append(relocs, update.Reloc{Offset: r.off, Type: r.typ, Symbol: sym, Addend: add})
	}
	d.b.t.Sections[idx].Relocs = relocs
	return idx, nil
}

// mustCarry reports whether new code must get its own copy of a section
// rather than refer to the running program's.
func (d *differ) mustCarry(s *section) bool {
	if _, paired := d.pair[s]; !paired {
		return true
	}
	if deep(s) {
		return true
	}
	return s.exec() && d.different[s]
}

func (d *differ) postSymbol(t target, r reloc) (int, int64, error) {
	switch t.kind {
	case tUndef, tOther:
		return d.b.symbol(update.Symbol{Kind: update.SymGlobal, Name: t.sym.name}), t.addend, nil
	case tString, tConst, tSection:
		if !d.mustCarry(t.sec) {
			return 0, 0, d.refuse(t.sec.name, "new code refers to anonymous data in %s that cannot be found in the running program", t.sec.name)
		}
		i, err := d.carry(t.sec)
		if err != nil {
			return 0, 0, err
		}
		return d.b.symbol(update.Symbol{Kind: update.SymSection, Section: i}), t.addend, nil
	}
	// tSymbol
	if d.mustCarry(t.sec) {
		i, err := d.carry(t.sec)
		if err != nil {
			return 0, 0, err
		}
		return d.b.symbol(update.Symbol{Kind: update.SymSection, Section: i, Offset: t.sym.value}), t.addend, nil
	}
	if t.sym.bind == elf.STB_LOCAL {
		p, ok := d.rename[t.sym]
		if !ok {
			return 0, 0, d.refuse(t.sym.name, "local symbol has no counterpart in the pre build")
		}
		return d.b.symbol(d.identity(p, d.pre)), t.addend, nil
	}
	return d.b.symbol(d.identity(t.sym, d.post)), t.addend, nil
}

// preCode extracts a replaced function's pre code and its relocations.
func (d *differ) preCode(y *symbol) (*update.Code, error) {
	s := y.sec
	if y.value+y.size > uint64(len(s.data)) {
		return nil, d.refuse(y.name, "pre function extends past its section")
	}
	c := &update.Code{Data: append([]byte{}, s.data[y.value:y.value+y.size]...)}
	seenDatum := map[[2]int64]bool{}
	for _, r := range s.relocs {
		if r.off < y.value || r.off >= y.value+y.size {
			continue
		}
		if tlsReloc(r) {
			ty, err := d.tlsSymbol(r, d.pre, y.name)
			if err != nil {
				return nil, err
			}
			c.Relocs = append(c.Relocs, update.Reloc{Offset: r.off - y.value, Type: r.typ, Symbol: d.b.symbol(ty), Addend: r.addend})
			continue
		}
		if update.RelocWidth(r.typ) == 0 {
			return nil, d.refuse(y.name, "relocation type %v is not supported", elf.R_X86_64(r.typ))
		}
		t := d.pre.resolve(r)
		var sym update.Symbol
		switch {
		case t.kind == tUndef || t.kind == tOther:
			sym = update.Symbol{Kind: update.SymGlobal, Name: t.sym.name}
		case t.kind == tSymbol && !deep(t.sec):
			sym = d.identity(t.sym, d.pre)
		default:
			sym = update.Symbol{Kind: update.SymAnon, Name: t.sec.name}
		}
		c.Relocs = append(c.Relocs, update.Reloc{Offset: r.off - y.value, Type: r.typ, Symbol: d.b.symbol(sym), Addend: t.addend})
		if sym.Kind == update.SymAnon && rodata(t.sec) && t.dat {
			// One record per datum: a table used many times is
			// proved once (the references resolve within one object).
			k := [2]int64{int64(t.sec.index), t.start}
			if dt := preDatum(t, r.off-y.value); dt != nil && !seenDatum[k] {
				seenDatum[k] = true
				c.Rodata = append(c.Rodata, *dt)
			}
		}
	}
	sort.Slice(c.Relocs, func(i, j int) bool { return c.Relocs[i].Offset < c.Relocs[j].Offset })
	sort.Slice(c.Rodata, func(i, j int) bool { return c.Rodata[i].Reloc < c.Rodata[j].Reloc })
	return c, nil
}

// tlsReloc reports a reference to thread-local storage: its value is an
// offset into every thread's block (or a call to __tls_get_addr), which the
// update format cannot carry yet. Named as such, not as an unknown
// relocation, so that the refusal says why.
// tlsSymbol is the update's symbol for a reference (in object o) to an
// existing thread-local variable, typed by how the code reaches it
// (update.TLSClass): run-pre matching learns its place from the running
// code, apply writes it. A new thread-local variable is refused: the
// running threads have no storage for it.
func (d *differ) tlsSymbol(r reloc, o *object, user string) (update.Symbol, error) {
	y := r.sym
	class := update.TLSClass(r.typ)
	if class == "" {
		return update.Symbol{}, d.refuse(user, "thread-local variable %s reached through %v, an access model livesplice cannot splice (local exec, initial exec, general and local dynamic it can)", y.name, elf.R_X86_64(r.typ))
	}
	if y.name == "" || y.typ == elf.STT_SECTION {
		return update.Symbol{}, d.refuse(user, "thread-local data reached through section %s rather than a variable's symbol", y.name)
	}
	var id update.Symbol
	switch {
	case y.undef:
		id = update.Symbol{Kind: update.SymGlobal, Name: y.name}
	case o == d.pre:
		id = d.identity(y, d.pre)
	case y.bind == elf.STB_LOCAL:
		p, ok := d.rename[y]
		if !ok {
			return update.Symbol{}, d.refuse(y.name, "new thread-local variable: the running threads have no storage for it (keep per-thread state in a shadow variable keyed by the thread)")
		}
		id = d.identity(p, d.pre)
	default:
		if d.pre.global(y.name) == nil {
			return update.Symbol{}, d.refuse(y.name, "new thread-local variable: the running threads have no storage for it (keep per-thread state in a shadow variable keyed by the thread)")
		}
		id = d.identity(y, d.post)
	}
	id.Type = "tls-" + class
	return id, nil
}

func tlsReloc(r reloc) bool {
	switch elf.R_X86_64(r.typ) {
	case elf.R_X86_64_TPOFF32, elf.R_X86_64_TPOFF64, elf.R_X86_64_GOTTPOFF, elf.R_X86_64_TLSGD,
		elf.R_X86_64_TLSLD, elf.R_X86_64_DTPOFF32, elf.R_X86_64_DTPOFF64, elf.R_X86_64_DTPMOD64,
		elf.R_X86_64_GOTPC32_TLSDESC, elf.R_X86_64_TLSDESC_CALL, elf.R_X86_64_TLSDESC:
		return true
	}
	return r.sym != nil && r.sym.typ == elf.STT_TLS
}
