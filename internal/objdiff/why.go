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
// is in the update. The ipa-ra reason is set by create, which builds the
// variant that tells.
func (d *differ) why(y, pre *symbol, inl map[string][]string) []update.Reason {
	var out []update.Reason
	switch {
	case pre == nil:
		out = append(out, update.Reason{Kind: update.ReasonNew})
	default:
		if data, ok := d.onlyData(pre.sec, y.sec); ok && len(data) > 0 {
			out = append(out, update.Reason{Kind: update.ReasonData, Detail: strings.Join(data, ", ")})
		} else {
			out = append(out, update.Reason{Kind: update.ReasonCode})
		}
	}
	if b := baseName(y.name); b != y.name {
		out = append(out, update.Reason{Kind: update.ReasonClone, Detail: b})
	}
	for _, f := range inl[baseName(y.name)] {
		out = append(out, update.Reason{Kind: update.ReasonInlined, Detail: f})
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
	into := d.post.inlines() // function -> functions inlined into it
	if len(into) == 0 {
		return nil
	}
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

// inlines maps each function with code in the object (by DWARF name) to
// the names of the functions inlined into it.
func (o *object) inlines() map[string]map[string]bool {
	if o.elf == nil || o.elf.Section(".debug_info") == nil {
		return nil
	}
	dw, err := o.elf.DWARF()
	if err != nil {
		return nil
	}
	names := map[dwarf.Offset]string{}
	type inst struct {
		off     dwarf.Offset
		origin  dwarf.Offset
		name    string
		inlined []dwarf.Offset
	}
	var insts []*inst
	var stack []*inst // the enclosing concrete function at each depth
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
		if n, ok := e.Val(dwarf.AttrName).(string); ok {
			names[e.Offset] = n
		}
		var cur *inst
		if len(stack) > 0 {
			cur = stack[len(stack)-1]
		}
		switch e.Tag {
		case dwarf.TagSubprogram:
			if e.Val(dwarf.AttrLowpc) != nil || e.Val(dwarf.AttrRanges) != nil {
				in := &inst{off: e.Offset}
				in.name, _ = e.Val(dwarf.AttrName).(string)
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
	name := func(off dwarf.Offset) string { return names[off] }
	out := map[string]map[string]bool{}
	for _, in := range insts {
		n := in.name
		if n == "" {
			n = name(in.origin)
		}
		if n == "" {
			continue
		}
		if out[n] == nil {
			out[n] = map[string]bool{}
		}
		for _, c := range in.inlined {
			if cn := name(c); cn != "" {
				out[n][cn] = true
			}
		}
	}
	return out
}
