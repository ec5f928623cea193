package objdiff

import (
	"bytes"
	"debug/elf"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"livesplice/internal/layout"
	"livesplice/internal/update"
)

// Sections livesplice.h's macros make: never code or data of the program.
const (
	customPrefix   = ".livesplice."
	hookPrefix     = ".livesplice.hook."           // .livesplice.hook.<kind>.<n>: a pointer to the hook
	handledPrefix  = ".livesplice.layout_handled." // .livesplice.layout_handled.<n>: a type's name
	maxHandledName = 256
)

// customSection splits a livesplice.h section name after prefix into its
// kind and the __COUNTER__ value that orders it in its file.
func customSection(name, prefix string) (kind string, n int, ok bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, '.')
	if i < 0 {
		n, err := strconv.Atoi(rest)
		return "", n, err == nil
	}
	n, err := strconv.Atoi(rest[i+1:])
	return rest[:i], n, err == nil
}

// hooks adds the object's hooks (new in the post build) to the target in
// the order the source defines them, and notes the types it marks with
// LIVESPLICE_LAYOUT_HANDLED.
func (d *differ) hooks() error {
	type entry struct {
		s    *section
		kind string
		n    int
	}
	var hs []entry
	for _, s := range d.post.sections {
		if _, _, ok := customSection(s.name, handledPrefix); ok && s.data != nil {
			str, _, _ := bytes.Cut(s.data, []byte{0})
			if len(str) > 0 && len(str) <= maxHandledName {
				d.b.handled[layout.Normalize(string(str))] = true
			}
			continue
		}
		kind, n, ok := customSection(s.name, hookPrefix)
		if !ok {
			continue
		}
		if !slices.Contains(update.HookKinds, kind) {
			return d.refuse(s.name, "unknown hook kind %q (use the macros of livesplice.h)", kind)
		}
		hs = append(hs, entry{s, kind, n})
	}
	sort.SliceStable(hs, func(i, j int) bool { return hs[i].n < hs[j].n })
	for _, h := range hs {
		var r *reloc
		for i := range h.s.relocs {
			if h.s.relocs[i].off == 0 {
				r = &h.s.relocs[i]
			}
		}
		if r == nil || len(h.s.relocs) != 1 || h.s.size != 8 || elf.R_X86_64(r.typ) != elf.R_X86_64_64 {
			return d.refuse(h.s.name, "hook entry is not one pointer to a function (use the macros of livesplice.h)")
		}
		t := d.post.resolve(*r)
		if t.kind != tSymbol && t.kind != tUndef {
			return d.refuse(h.s.name, "hook entry does not point at a named function")
		}
		if t.addend != 0 || (t.kind == tSymbol && t.sym.typ != elf.STT_FUNC) {
			return d.refuse(t.sym.name, "a hook must be a function")
		}
		if d.oldHook(h.s, t.sym.name) {
			continue
		}
		sym, _, err := d.postSymbol(t, *r)
		if err != nil {
			return err
		}
		d.b.t.Hooks = append(d.b.t.Hooks, update.Hook{Kind: h.kind, Name: t.sym.name, Symbol: sym})
	}
	return nil
}

// oldHook reports a hook the pre build has too (the source had it before
// the patch): the running program was built without the section, so such
// a hook belongs to an earlier update, not this one.
func (d *differ) oldHook(s *section, fn string) bool {
	for _, p := range d.pre.byName[s.name] {
		for _, r := range p.relocs {
			if r.off == 0 && r.sym != nil {
				if t := d.pre.resolve(r); t.sym != nil && t.sym.name == fn {
					return true
				}
			}
		}
	}
	return false
}

// checkLayout notes every struct or union that the object's changed
// functions (or its file-scope variables) see, whose layout differs from
// the pre build's. Builder.LayoutErr refuses those the patch did not mark.
func (d *differ) checkLayout(pre, post []byte) error {
	var funcs []string
	for _, n := range d.changed {
		// foo.isra.0, foo.part.1: DWARF names the source function.
		base, _, _ := strings.Cut(n, ".")
		funcs = append(funcs, base)
	}
	before, err := layout.FromObject(pre, nil)
	if err != nil {
		return fmt.Errorf("%s (pre build): %w", d.rel, err)
	}
	after, err := layout.FromObject(post, funcs)
	if err != nil {
		return fmt.Errorf("%s (post build): %w", d.rel, err)
	}
	for _, c := range layout.Compare(before, after) {
		d.b.layouts = append(d.b.layouts, layoutChange{file: d.fileName(), c: c})
	}
	return nil
}
