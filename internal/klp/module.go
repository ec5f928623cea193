package klp

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"strings"

	"livesplice/internal/update"
)

// moduleBuilder writes the livepatch object: the carried sections of every
// unit, their symbols and relocations, and the kernel tables for them.
type moduleBuilder struct {
	obj     *outObject
	exports map[string]bool
	fresh   map[string]int // once-static key -> symbol of its fresh copy
	// newGlobals are the global symbols the update's new code defines
	newGlobals map[string]bool
	funcs      []Func
	tables     map[string]*tableOut
	strs       int // index of the section holding copied strings, 0: none yet
	hasStrs    bool
	repl       *outSection // the module's .altinstr_replacement
	// callbacks: object -> callback kind -> global alias of the function
	callbacks map[string]map[string]string
	// hooks: object -> livesplice.h hook kind -> hooks in order
	hooks map[string]map[string][]hook
}

// tableOut collects the kept entries of one kernel table across units.
type tableOut struct {
	name   string
	flags  elf.SectionFlag
	align  uint64
	data   []byte
	relocs []outReloc
	orc    []byte // .orc_unwind entries parallel to .orc_unwind_ip
}

// unitCtx is what resolving one unit's references needs.
type unitCtx struct {
	u       Unit
	file    string         // STT_FILE name, for refusals
	carried map[string]int // post section name -> module section index
	base    int            // module section index of the unit's first carried section
	t       *update.Target
	aux     int // module symbol of the unit's .altinstr_aux copy, 0: none yet
}

// addUnit adds a unit's carried sections, symbols, relocations, replaced
// functions and table entries.
func (m *moduleBuilder) addUnit(u Unit, t *update.Target) error {
	c := &unitCtx{u: u, file: u.Rel, carried: map[string]int{}, t: t, base: len(m.obj.sections)}
	for _, f := range t.Functions {
		if f.File != "" {
			c.file = f.File
			break
		}
	}
	for i, s := range t.Sections {
		if s.Kind == update.KindText && !textSection(s.Name) {
			name := s.Name
			if len(s.Defs) > 0 {
				name = s.Defs[0].Name
			}
			return refused(c.file, name, "changed code in section %s, which a livepatch cannot carry (noinstr, entry, scheduler or alternative code)", s.Name)
		}
		typ, flags := elfFlags(s.Kind)
		name := s.Name
		if name == dyndbgCarried {
			// Registered by the module loader, which writes the
			// descriptors' flags and keys.
			name, flags = dyndbgSection, elf.SHF_ALLOC|elf.SHF_WRITE
		}
		os := &outSection{name: name, typ: typ, flags: flags, align: s.Align, data: s.Data, size: s.Size}
		mi := m.obj.addSection(os)
		if _, dup := c.carried[s.Name]; dup && s.Kind == update.KindText {
			return refused(c.file, s.Name, "two carried code sections share a name; cannot tell their tables apart")
		}
		c.carried[s.Name] = mi
		if mi != c.base+i {
			return fmt.Errorf("module section numbering out of step")
		}
		for _, d := range s.Defs {
			typ := elf.STT_OBJECT
			if d.Func {
				typ = elf.STT_FUNC
			}
			if d.File == "" && m.newGlobals[d.Name] {
				// Other units refer to it by name (symbol): one symbol.
				y := m.obj.symbols[m.obj.undefined(d.Name)]
				y.typ, y.sec, y.value, y.size = typ, mi, d.Offset, d.Size
				continue
			}
			m.obj.addSymbol(&outSymbol{name: d.Name, bind: elf.STB_LOCAL, typ: typ, sec: mi, value: d.Offset, size: d.Size})
		}
	}
	for i, s := range t.Sections {
		os := m.obj.sections[c.base+i]
		for _, r := range s.Relocs {
			sym, add, err := m.symbol(c, t.Symbols[r.Symbol], r.Addend)
			if err != nil {
				return err
			}
			os.relocs = append(os.relocs, outReloc{off: r.Offset, typ: r.Type, sym: sym, addend: add})
		}
	}
	for _, f := range t.Functions {
		if f.Status != update.StatusReplaced {
			continue
		}
		if !cName.MatchString(f.Name) {
			return refused(c.file, f.Name, "function name cannot be written into the livepatch")
		}
		alias := fmt.Sprintf("__livesplice_new_%d", len(m.funcs))
		m.obj.addSymbol(&outSymbol{name: alias, bind: elf.STB_GLOBAL, typ: elf.STT_FUNC, sec: c.base + f.Section, size: f.Size})
		m.funcs = append(m.funcs, Func{Object: u.Object, Name: f.Name, File: f.File, newName: alias})
	}
	if err := m.addTables(c); err != nil {
		return err
	}
	if err := m.addCallbacks(c); err != nil {
		return err
	}
	return m.addHooks(c)
}

// addCallbacks finds the unit's kpatch-macros.h callbacks and gives each
// function a global alias the stub's klp_callbacks name.
func (m *moduleBuilder) addCallbacks(c *unitCtx) error {
	p, err := readPost(c.u)
	if err != nil {
		return err
	}
	for si, s := range p.f.Sections {
		kind, ok := strings.CutPrefix(s.Name, callbackPrefix)
		if !ok || !slices.Contains(callbackKinds, kind) {
			continue
		}
		for _, r := range p.relocs[si] {
			mi, off, ok := c.carriedTarget(p, r)
			if !ok {
				return refused(c.file, s.Name, "%s callback is not a function the patch adds", kind)
			}
			cbs := m.callbacks[c.u.Object]
			if cbs == nil {
				cbs = map[string]string{}
				m.callbacks[c.u.Object] = cbs
			}
			if _, dup := cbs[kind]; dup {
				return refused(c.file, m.funcName(mi), "a second %s callback for %s; livepatch has one per object", kind, c.u.Object)
			}
			alias := fmt.Sprintf("__livesplice_cb_%s_%d", kind, len(m.obj.symbols))
			m.obj.addSymbol(&outSymbol{name: alias, bind: elf.STB_GLOBAL, typ: elf.STT_FUNC, sec: mi, value: uint64(off)})
			cbs[kind] = alias
		}
	}
	return nil
}

// symbol turns a symbolic relocation target into a symbol of the module
// object and an addend.
func (m *moduleBuilder) symbol(c *unitCtx, y update.Symbol, addend int64) (int, int64, error) {
	switch y.Kind {
	case update.SymSection:
		return m.obj.sections[c.base+y.Section].sym, addend + int64(y.Offset), nil
	case update.SymGlobal:
		if m.newGlobals[y.Name] {
			return m.obj.undefined(y.Name), addend, nil // defined by a unit of this update
		}
		if y.Name == auxSymbol {
			i, err := m.auxCopy(c)
			return i, addend, err
		}
		if m.exports[y.Name] {
			return m.obj.undefined(y.Name), addend, nil
		}
		return m.obj.undefined(KLPSymbol(c.u.Object, y.Name)), addend, nil
	case update.SymLocal:
		if onceStatic.MatchString(y.Name) {
			return m.freshCopy(c.u.Object+"\x00"+y.File+"\x00"+y.Name, y.Name), addend, nil
		}
		return m.obj.undefined(KLPSymbol(c.u.Object, y.Name)), addend, nil
	}
	return 0, 0, refused(c.file, y.Name, "new code refers to %s symbol %q that cannot be found in the running kernel", y.Kind, y.Name)
}

// freshCopy returns a new zeroed variable standing in for a once-static.
func (m *moduleBuilder) freshCopy(key, name string) int {
	if i, ok := m.fresh[key]; ok {
		return i
	}
	si := m.obj.addSection(&outSection{name: ".bss.livesplice." + name, typ: elf.SHT_NOBITS, flags: elf.SHF_ALLOC | elf.SHF_WRITE, align: 8, size: 16})
	i := m.obj.addSymbol(&outSymbol{name: name, bind: elf.STB_LOCAL, typ: elf.STT_OBJECT, sec: si, size: 16})
	m.fresh[key] = i
	return i
}

// postObject is a unit's post object as debug/elf reads it, with its
// relocations by section.
type postObject struct {
	f      *elf.File
	syms   []elf.Symbol // index i is ELF symbol i+1
	relocs map[int][]rawReloc
}

type rawReloc struct {
	off    uint64
	typ    uint32
	sym    int
	addend int64
}

func readPost(u Unit) (*postObject, error) {
	f, err := elf.NewFile(bytes.NewReader(u.Post))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u.Rel, err)
	}
	syms, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("%s: symbols: %w", u.Rel, err)
	}
	p := &postObject{f: f, syms: syms, relocs: map[int][]rawReloc{}}
	for _, s := range f.Sections {
		if s.Type != elf.SHT_RELA || int(s.Info) >= len(f.Sections) {
			continue
		}
		d, err := s.Data()
		if err != nil || len(d)%24 != 0 {
			return nil, fmt.Errorf("%s: %s: bad relocations", u.Rel, s.Name)
		}
		var rs []rawReloc
		for o := 0; o < len(d); o += 24 {
			info := binary.LittleEndian.Uint64(d[o+8:])
			if uint32(info) == uint32(elf.R_X86_64_NONE) {
				continue
			}
			rs = append(rs, rawReloc{off: binary.LittleEndian.Uint64(d[o:]), typ: uint32(info), sym: int(info >> 32), addend: int64(binary.LittleEndian.Uint64(d[o+16:]))})
		}
		sort.Slice(rs, func(a, b int) bool { return rs[a].off < rs[b].off })
		p.relocs[int(s.Info)] = rs
	}
	return p, nil
}

// place resolves a relocation's target to a section and an offset in it
// (value + addend; no PC bias: table entries are data).
func (p *postObject) place(r rawReloc) (sec *elf.Section, off int64, sym *elf.Symbol) {
	if r.sym <= 0 || r.sym > len(p.syms) {
		return nil, 0, nil
	}
	y := &p.syms[r.sym-1]
	if y.Section == elf.SHN_UNDEF || y.Section >= elf.SHN_LORESERVE || int(y.Section) >= len(p.f.Sections) {
		return nil, r.addend, y
	}
	return p.f.Sections[y.Section], int64(y.Value) + r.addend, y
}

// carriedTarget tells whether a relocation points into a carried section:
// the module section and offset.
func (c *unitCtx) carriedTarget(p *postObject, r rawReloc) (int, int64, bool) {
	sec, off, _ := p.place(r)
	if sec == nil {
		return 0, 0, false
	}
	mi, ok := c.carried[sec.Name]
	return mi, off, ok
}

// addTables copies the table entries that describe carried code, and
// refuses carried code that a table the module cannot carry describes.
func (m *moduleBuilder) addTables(c *unitCtx) error {
	p, err := readPost(c.u)
	if err != nil {
		return err
	}
	var orcData []byte
	if s := p.f.Section(".orc_unwind"); s != nil {
		orcData, _ = s.Data()
	}
	for si, s := range p.f.Sections {
		if s.Flags&elf.SHF_ALLOC == 0 || s.Type == elf.SHT_RELA {
			continue
		}
		tb, isTable := tables[s.Name]
		rs := p.relocs[si]
		if !isTable {
			if _, carried := c.carried[s.Name]; carried || companions[s.Name] || plainSection(s.Name) || s.Name == dyndbgCarried {
				continue
			}
			for _, r := range rs {
				if mi, _, ok := c.carriedTarget(p, r); ok {
					return refused(c.file, m.funcName(mi), "described by kernel section %s, which create does not know how to carry", s.Name)
				}
			}
			continue
		}
		if tb.kind == tableDrop {
			continue
		}
		data, err := s.Data()
		if err != nil {
			return fmt.Errorf("%s: %s: %w", c.u.Rel, s.Name, err)
		}
		for i := 0; i < len(rs); {
			entry := rs[i].off / tb.entry
			j := i
			for j < len(rs) && rs[j].off/tb.entry == entry {
				j++
			}
			group := rs[i:j]
			i = j
			mi, _, ok := c.carriedTarget(p, group[0])
			if !ok {
				continue
			}
			if tb.kind == tableRefuse {
				return refused(c.file, m.funcName(mi), "%s", tb.reason)
			}
			start := entry * tb.entry
			if start+tb.entry > uint64(len(data)) {
				return fmt.Errorf("%s: %s: relocation outside the table", c.u.Rel, s.Name)
			}
			if s.Name == ".altinstructions" {
				if err := m.addAlternative(c, p, data[start:start+tb.entry], group, start); err != nil {
					return err
				}
				continue
			}
			to := m.table(s)
			base := uint64(len(to.data))
			to.data = append(to.data, data[start:start+tb.entry]...)
			if s.Name == ".orc_unwind_ip" {
				if (entry+1)*6 > uint64(len(orcData)) {
					return fmt.Errorf("%s: .orc_unwind shorter than .orc_unwind_ip", c.u.Rel)
				}
				to.orc = append(to.orc, orcData[entry*6:(entry+1)*6]...)
			}
			for _, r := range group {
				sym, add, err := m.postSymbol(c, p, r)
				if err != nil {
					return err
				}
				to.relocs = append(to.relocs, outReloc{off: base + r.off - start, typ: r.typ, sym: sym, addend: add})
			}
		}
	}
	return nil
}

// plainSection reports code and data sections (not tables).
func plainSection(name string) bool {
	for _, p := range []string{".text", ".rodata", ".data", ".bss", ".init.", ".exit.", ".ref.", ".meminit", ".sched.text", ".noinstr.text", ".entry.text", ".cpuidle.text", ".spinlock.text", ".head.text"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return metadata(name)
}

func (m *moduleBuilder) funcName(mi int) string {
	for _, y := range m.obj.symbols {
		if y.sec == mi && y.typ == elf.STT_FUNC && y.bind == elf.STB_LOCAL {
			return y.name
		}
	}
	return m.obj.sections[mi].name
}

func (m *moduleBuilder) table(s *elf.Section) *tableOut {
	t, ok := m.tables[s.Name]
	if !ok {
		t = &tableOut{name: s.Name, flags: s.Flags &^ elf.SHF_GROUP, align: max(s.Addralign, 1)}
		m.tables[s.Name] = t
	}
	return t
}

// postSymbol resolves a table relocation of the post object to a module
// symbol: carried code, a copied string, or a kernel symbol by name.
func (m *moduleBuilder) postSymbol(c *unitCtx, p *postObject, r rawReloc) (int, int64, error) {
	sec, off, y := p.place(r)
	if y == nil {
		return 0, 0, fmt.Errorf("%s: bad relocation symbol %d", c.u.Rel, r.sym)
	}
	if sec == nil {
		if y.Section != elf.SHN_UNDEF {
			return 0, 0, refused(c.file, y.Name, "kernel table refers to an absolute symbol")
		}
		return m.symbol(c, update.Symbol{Kind: update.SymGlobal, Name: y.Name}, r.addend)
	}
	if mi, ok := c.carried[sec.Name]; ok {
		return m.obj.sections[mi].sym, off, nil
	}
	if sec.Flags&elf.SHF_MERGE != 0 && sec.Flags&elf.SHF_STRINGS != 0 {
		d, err := sec.Data()
		if err != nil || off < 0 || off >= int64(len(d)) {
			return 0, 0, fmt.Errorf("%s: string outside %s", c.u.Rel, sec.Name)
		}
		str := d[off:]
		if n := bytes.IndexByte(str, 0); n >= 0 {
			str = str[:n+1]
		}
		return m.copyString(str)
	}
	// A named symbol covering the place: the kernel's copy of it.
	for _, s := range p.syms {
		if s.Name == "" || int(s.Section) >= len(p.f.Sections) || p.f.Sections[s.Section] != sec || elf.ST_TYPE(s.Info) == elf.STT_SECTION {
			continue
		}
		if int64(s.Value) <= off && (off < int64(s.Value+s.Size) || off == int64(s.Value)) {
			kind := update.SymGlobal
			if elf.ST_BIND(s.Info) == elf.STB_LOCAL {
				kind = update.SymLocal
			}
			return m.symbol(c, update.Symbol{Kind: kind, Name: s.Name, File: c.file}, off-int64(s.Value))
		}
	}
	return 0, 0, refused(c.file, sec.Name, "kernel table refers to an anonymous place in %s that the livepatch cannot reach", sec.Name)
}

// copyString adds a NUL-terminated string to the module's string section.
func (m *moduleBuilder) copyString(s []byte) (int, int64, error) {
	if !m.hasStrs {
		m.strs = m.obj.addSection(&outSection{name: ".rodata.livesplice.str", typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC, align: 1, data: []byte{}})
		m.hasStrs = true
	}
	os := m.obj.sections[m.strs]
	off := int64(len(os.data))
	os.data = append(os.data, s...)
	return os.sym, off, nil
}

// finishTables adds the collected tables as sections.
func (m *moduleBuilder) finishTables() {
	var names []string
	for n := range m.tables {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		t := m.tables[n]
		i := m.obj.addSection(&outSection{name: n, typ: elf.SHT_PROGBITS, flags: t.flags, align: t.align, data: t.data})
		m.obj.sections[i].relocs = t.relocs
		if n == ".orc_unwind_ip" {
			m.obj.addSection(&outSection{name: ".orc_unwind", typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC, align: 1, data: t.orc})
		}
	}
}

// stub writes the C source of the module's klp_patch.
func stub(funcs []Func, callbacks map[string]map[string]string, hooks map[string]map[string][]hook) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("// Generated by livesplice create: the livepatch declaration.\n")
	b.WriteString("#include <linux/module.h>\n#include <linux/kernel.h>\n#include <linux/livepatch.h>\n\n")
	byObj := map[string][]Func{}
	var objs []string
	for _, f := range funcs {
		if _, ok := byObj[f.Object]; !ok {
			objs = append(objs, f.Object)
		}
		byObj[f.Object] = append(byObj[f.Object], f)
	}
	for o := range callbacks {
		if _, ok := byObj[o]; !ok {
			objs = append(objs, o)
			byObj[o] = nil
		}
	}
	for o := range hooks {
		if _, ok := byObj[o]; !ok {
			objs = append(objs, o)
			byObj[o] = nil
		}
	}
	dispatch := map[string]string{}
	sort.Strings(objs)
	for oi, o := range objs {
		if !cName.MatchString(o) {
			return nil, fmt.Errorf("kernel object name %q cannot be written into the livepatch", o)
		}
		for _, f := range byObj[o] {
			fmt.Fprintf(&b, "extern void %s(void);\n", f.newName)
		}
		for _, k := range callbackKinds {
			if a, ok := callbacks[o][k]; ok {
				ret := "void"
				if k == "pre_patch" {
					ret = "int"
				}
				fmt.Fprintf(&b, "extern %s %s(struct klp_object *);\n", ret, a)
			}
		}
		if hs := hooks[o]; len(hs) > 0 {
			dispatch[o] = hookDispatchers(&b, oi, hs)
		}
		fmt.Fprintf(&b, "\nstatic struct klp_func funcs_%d[] = {\n", oi)
		for _, f := range byObj[o] {
			fmt.Fprintf(&b, "\t{ .old_name = %q, .new_func = %s, .old_sympos = 0 },\n", f.Name, f.newName)
		}
		b.WriteString("\t{ }\n};\n\n")
	}
	if len(funcs) > 0 {
		// Where each old_sympos lives, so that apply can set it (SetFuncSympos).
		b.WriteString("struct livesplice_sympos { const char *object, *name; unsigned long *sympos; };\n")
		b.WriteString("static const struct livesplice_sympos livesplice_sympos[] __used __section(\"" + symposSection + "\") = {\n")
		for oi, o := range objs {
			for fi, f := range byObj[o] {
				fmt.Fprintf(&b, "\t{ %q, %q, &funcs_%d[%d].old_sympos },\n", o, f.Name, oi, fi)
			}
		}
		b.WriteString("};\n\n")
	}
	b.WriteString("static struct klp_object objs[] = {\n")
	for oi, o := range objs {
		name := "NULL"
		if o != "vmlinux" {
			name = fmt.Sprintf("%q", o)
		}
		fmt.Fprintf(&b, "\t{ .name = %s, .funcs = funcs_%d", name, oi)
		if cbs := callbacks[o]; len(cbs) > 0 {
			b.WriteString(", .callbacks = {")
			for _, k := range callbackKinds {
				if a, ok := cbs[k]; ok {
					fmt.Fprintf(&b, " .%s = %s,", k, a)
				}
			}
			b.WriteString(" }")
		}
		if d, ok := dispatch[o]; ok {
			b.WriteString(", " + d)
		}
		b.WriteString(" },\n")
	}
	b.WriteString("\t{ }\n};\n\n")
	b.WriteString(`static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int __init livesplice_init(void)
{
	return klp_enable_patch(&patch);
}

static void __exit livesplice_exit(void)
{
}

module_init(livesplice_init);
module_exit(livesplice_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
`)
	return b.Bytes(), nil
}

// addAlternative copies one .altinstructions entry of carried code and its
// replacement instructions (with their relocations) into the module, where
// the module loader applies it as at boot.
func (m *moduleBuilder) addAlternative(c *unitCtx, p *postObject, entry []byte, group []rawReloc, start uint64) error {
	var instr, repl *rawReloc
	for i := range group {
		switch group[i].off - start {
		case 0:
			instr = &group[i]
		case 4:
			repl = &group[i]
		}
	}
	if instr == nil || repl == nil || len(entry) != 12 {
		return refused(c.file, ".altinstructions", "alternative entry without its two relocations")
	}
	mi, _, _ := c.carriedTarget(p, *instr)
	sec, off, _ := p.place(*repl)
	if sec == nil || sec.Name != ".altinstr_replacement" {
		return refused(c.file, m.funcName(mi), "alternative whose replacement is not in .altinstr_replacement")
	}
	n := int64(entry[11])
	d, err := sec.Data()
	if err != nil || off < 0 || off+n > int64(len(d)) {
		return fmt.Errorf("%s: alternative replacement outside .altinstr_replacement", c.u.Rel)
	}
	if m.repl == nil {
		i := m.obj.addSection(&outSection{name: ".altinstr_replacement", typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC | elf.SHF_EXECINSTR, align: 1, data: []byte{}})
		m.repl = m.obj.sections[i]
	}
	newOff := int64(len(m.repl.data))
	m.repl.data = append(m.repl.data, d[off:off+n]...)
	for ri, rs := range p.relocs {
		if p.f.Sections[ri] != sec {
			continue
		}
		for _, r := range rs {
			if int64(r.off) < off || int64(r.off) >= off+n {
				continue
			}
			sym, add, err := m.postSymbol(c, p, r)
			if err != nil {
				return err
			}
			m.repl.relocs = append(m.repl.relocs, outReloc{off: uint64(newOff + int64(r.off) - off), typ: r.typ, sym: sym, addend: add})
		}
	}
	to := m.table(p.f.Section(".altinstructions"))
	base := uint64(len(to.data))
	to.data = append(to.data, entry...)
	isym, iadd, err := m.postSymbol(c, p, *instr)
	if err != nil {
		return err
	}
	to.relocs = append(to.relocs, outReloc{off: base, typ: instr.typ, sym: isym, addend: iadd},
		outReloc{off: base + 4, typ: repl.typ, sym: m.repl.sym, addend: newOff})
	return nil
}
