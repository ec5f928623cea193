package objdiff

import (
	"debug/dwarf"
	"regexp"
	"sort"
	"strings"

	"livesplice/internal/update"
)

// cloneSuffix matches GCC's names for specialised copies of a function.
var cloneSuffix = regexp.MustCompile(`^(.+?)((\.(isra|constprop|part|cold|lto_priv|specialized)(\.[0-9]+)?)+)$`)

// baseName strips GCC's clone suffixes (foo.constprop.0.isra.0 -> foo).
func baseName(n string) string {
	if m := cloneSuffix.FindStringSubmatch(n); m != nil {
		return m[1]
	}
	return n
}

// why says why post function y (pre: its running twin, nil for a new one)
// is in the update. The ipa-ra reason is set by create (ipara.go), which
// builds the -fno-ipa-ra variant that tells.
func (d *differ) why(y, pre *symbol, inl map[string][]string) []update.Reason {
	var out []update.Reason
	base := baseName(y.name)
	if pre == nil {
		out = append(out, update.Reason{Kind: update.ReasonNew})
	}
	if at, ok := d.sourceChanged(base); ok {
		out = append(out, update.Reason{Kind: update.ReasonSource, Detail: at})
	}
	if pre != nil {
		if data, ok := d.onlyData(pre.sec, y.sec); ok && len(data) > 0 {
			out = append(out, update.Reason{Kind: update.ReasonData, Detail: strings.Join(data, ", ")})
		}
	}
	var inlined []string
	if d.b.postRoot != "" {
		// With the trees: the inlined functions whose source changed.
		if di := d.post.dwarf(); di != nil {
			for c := range di.into[base] {
				if _, ok := d.sourceChanged(c); ok && c != base {
					inlined = append(inlined, c)
				}
			}
			sort.Strings(inlined)
		}
	} else {
		inlined = inl[base]
	}
	if len(out) == 0 && len(inlined) == 0 && pre != nil {
		if di := d.post.dwarf(); di != nil {
			if file, _, _, ok := di.extent(base); ok && d.linesMoved(pre.sec, y.sec, file) {
				out = append(out, update.Reason{Kind: update.ReasonLines, Detail: d.b.touchedLines(file).rel})
			}
		}
	}
	if len(out) == 0 && len(inlined) == 0 {
		// Nothing the source or the data says: its code changed all the
		// same (a header's macro, a callee's signature, register use).
		out = append(out, update.Reason{Kind: update.ReasonCode})
	}
	for _, c := range inlined {
		out = append(out, update.Reason{Kind: update.ReasonInlined, Detail: c})
	}
	if base != y.name {
		out = append(out, update.Reason{Kind: update.ReasonClone, Detail: base})
	}
	return out
}

// onlyData reports whether two function sections are the same code
// reaching other read-only data, and names the post data that differ.
func (d *differ) onlyData(a, b *section) ([]string, bool) {
	if a == nil || b == nil || a.size != b.size || len(a.relocs) != len(b.relocs) || string(a.masked()) != string(b.masked()) {
		return nil, false
	}
	seen := map[string]bool{}
	var names []string
	for i := range a.relocs {
		ra, rb := a.relocs[i], b.relocs[i]
		if ra.off != rb.off || ra.typ != rb.typ {
			return nil, false
		}
		ta, tb := d.pre.resolve(ra), d.post.resolve(rb)
		if d.sameTarget(ta, tb) {
			continue
		}
		if !ta.dat || !tb.dat {
			return nil, false
		}
		if n := datumName(tb); !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	return names, true
}

// inlinedChanges finds, from the post object's DWARF, the functions inlined
// into changed functions that look changed themselves: the object has a
// changed out-of-line copy (or clone) of them, or every function they are
// inlined into changed and there are at least two. Keyed by the name of
// the function they are inlined into (DWARF names: clones share their
// origin's). Best effort: an object without usable DWARF gives none.
func (d *differ) inlinedChanges(changed []*symbol) map[string][]string {
	di := d.post.dwarf()
	if di == nil || len(di.into) == 0 {
		return nil
	}
	into := di.into // function -> functions inlined into it
	isChanged := map[string]bool{}
	for _, y := range changed {
		isChanged[baseName(y.name)] = true
	}
	users := map[string][]string{} // inlined function -> functions it is inlined into
	for fn, callees := range into {
		for c := range callees {
			users[c] = append(users[c], fn)
		}
	}
	suspect := map[string]bool{}
	for c, us := range users {
		all := true
		for _, u := range us {
			all = all && isChanged[u]
		}
		if isChanged[c] || (all && len(us) >= 2) {
			suspect[c] = true
		}
	}
	out := map[string][]string{}
	for fn := range isChanged {
		for c := range into[fn] {
			if suspect[c] && c != fn {
				out[fn] = append(out[fn], c)
			}
		}
		sort.Strings(out[fn])
	}
	return out
}

// dwarfInfo is what the reasons need from an object's DWARF.
type dwarfInfo struct {
	into map[string]map[string]bool // function with code -> functions inlined into it
	decl map[string]declPlace       // function name -> where its source starts
	ends map[string][]int           // file -> sorted decl lines of every function in it
}

type declPlace struct {
	file string
	line int
}

// extent is the source lines of function n: from its declaration to the
// line before the next function of its file.
func (di *dwarfInfo) extent(n string) (file string, from, to int, ok bool) {
	p, ok := di.decl[n]
	if !ok || p.file == "" || p.line == 0 {
		return "", 0, 0, false
	}
	to = 1 << 30
	for _, l := range di.ends[p.file] {
		if l > p.line {
			to = l - 1
			break
		}
	}
	return p.file, p.line, to, true
}

// dwarf reads the object's DWARF once (nil without usable DWARF; a
// failed read is not tried again).
func (o *object) dwarf() *dwarfInfo {
	if o.dwRead {
		return o.dw
	}
	o.dwRead = true
	if o.elf == nil || o.elf.Section(".debug_info") == nil {
		return nil
	}
	dw, err := o.elf.DWARF()
	if err != nil {
		return nil
	}
	di := &dwarfInfo{into: map[string]map[string]bool{}, decl: map[string]declPlace{}, ends: map[string][]int{}}
	names := map[dwarf.Offset]string{}
	type inst struct {
		origin  dwarf.Offset
		name    string
		inlined []dwarf.Offset
	}
	var insts []*inst
	var stack []*inst // the enclosing concrete function at each depth
	var files []*dwarf.LineFile
	r := dw.Reader()
	for {
		e, err := r.Next()
		if err != nil || e == nil {
			break
		}
		if e.Tag == 0 {
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		if e.Tag == dwarf.TagCompileUnit {
			files = nil
			if lr, err := dw.LineReader(e); err == nil && lr != nil {
				files = lr.Files()
			}
		}
		n, _ := e.Val(dwarf.AttrName).(string)
		if n != "" {
			names[e.Offset] = n
		}
		var cur *inst
		if len(stack) > 0 {
			cur = stack[len(stack)-1]
		}
		switch e.Tag {
		case dwarf.TagSubprogram:
			if fi, ok := e.Val(dwarf.AttrDeclFile).(int64); ok && n != "" && e.Val(dwarf.AttrDeclaration) == nil && fi >= 0 && int(fi) < len(files) && files[fi] != nil {
				line, _ := e.Val(dwarf.AttrDeclLine).(int64)
				f := files[fi].Name
				if _, dup := di.decl[n]; !dup {
					di.decl[n] = declPlace{file: f, line: int(line)}
				}
				di.ends[f] = append(di.ends[f], int(line))
			}
			if e.Val(dwarf.AttrLowpc) != nil || e.Val(dwarf.AttrRanges) != nil {
				in := &inst{name: n}
				if o, ok := e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset); ok {
					in.origin = o
				} else if o, ok := e.Val(dwarf.AttrSpecification).(dwarf.Offset); ok {
					in.origin = o
				}
				insts = append(insts, in)
				cur = in
			} else {
				cur = nil
			}
		case dwarf.TagInlinedSubroutine:
			if o, ok := e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset); ok && cur != nil {
				cur.inlined = append(cur.inlined, o)
			}
		}
		if e.Children {
			stack = append(stack, cur)
		}
	}
	for f := range di.ends {
		sort.Ints(di.ends[f])
	}
	for _, in := range insts {
		n := in.name
		if n == "" {
			n = names[in.origin]
		}
		if n == "" {
			continue
		}
		if di.into[n] == nil {
			di.into[n] = map[string]bool{}
		}
		for _, c := range in.inlined {
			if cn := names[c]; cn != "" {
				di.into[n][cn] = true
			}
		}
	}
	o.dw = di
	return di
}
