package klp

import (
	"bytes"
	"debug/elf"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// livesplice.h's hooks in a kernel update. The macros leave a pointer to
// the hook in .livesplice.hook.<kind>.<n> (n: __COUNTER__, the order in the
// file), as for processes; the stub calls them from the klp_object's
// callbacks, several of a kind in order:
//
//	PRE_APPLY  -> pre_patch (the first non-zero return vetoes: FAIL_APPLY
//	              hooks run, the module fails to load with ECANCELED)
//	POST_APPLY -> post_patch
//	FAIL_APPLY -> post_unpatch when post_patch did not run (enabling failed
//	              or the transition was reversed)
//	PRE_UNDO   -> pre_unpatch (cannot veto: a non-zero return is logged)
//	POST_UNDO  -> post_unpatch after post_patch ran (undo)
//
// The other kinds need a moment livepatch does not have (the whole kernel
// stopped, or the switch itself) and are refused.

// hookPrefix starts livesplice.h's hook sections.
const hookPrefix = ".livesplice.hook."

// kernelHookKinds are the livesplice.h hook kinds a kernel update can have.
var kernelHookKinds = []string{"pre_apply", "post_apply", "fail_apply", "pre_undo", "post_undo"}

// hookMacro is the LIVESPLICE_* macro of a hook kind.
func hookMacro(kind string) string { return "LIVESPLICE_" + strings.ToUpper(kind) }

// hook is one livesplice.h hook of a unit: its kind and the global alias
// of its function in the module.
type hook struct {
	kind, alias, name string
}

// addHooks finds the unit's livesplice.h hooks (new in the post build)
// and gives each function a global alias the stub calls.
func (m *moduleBuilder) addHooks(c *unitCtx) error {
	p, err := readPost(c.u)
	if err != nil {
		return err
	}
	pre, err := readPost(Unit{Rel: c.u.Rel + " (pre)", Post: c.u.Pre})
	if err != nil {
		return err
	}
	type entry struct {
		si   int
		kind string
		n    int
	}
	var es []entry
	for si, s := range p.f.Sections {
		rest, ok := strings.CutPrefix(s.Name, hookPrefix)
		if !ok || s.Type == elf.SHT_RELA {
			continue
		}
		// The pre build has it too: an earlier update's hook (a stacked
		// update built on a tree with that update's patch), not this one's.
		if oldHook(p, pre, si) {
			continue
		}
		i := strings.LastIndexByte(rest, '.')
		n, err := strconv.Atoi(rest[i+1:])
		if i < 0 || err != nil {
			return refused(c.file, s.Name, "not a hook section of livesplice.h")
		}
		es = append(es, entry{si, rest[:i], n})
	}
	sort.SliceStable(es, func(i, j int) bool { return es[i].n < es[j].n })
	for _, e := range es {
		rs := p.relocs[e.si]
		if len(rs) != 1 || rs[0].off != 0 {
			return refused(c.file, p.f.Sections[e.si].Name, "hook entry is not one pointer to a function (use the macros of livesplice.h)")
		}
		mi, off, ok := c.carriedTarget(p, rs[0])
		if !ok {
			return refused(c.file, p.f.Sections[e.si].Name, "%s hook is not a function the patch adds", hookMacro(e.kind))
		}
		name := m.funcName(mi)
		if !slices.Contains(kernelHookKinds, e.kind) {
			return refused(c.file, name, "%s hook: livepatch has no point where it could run in the kernel (no moment with every task stopped); a kernel update can use LIVESPLICE_PRE_APPLY, POST_APPLY, FAIL_APPLY, PRE_UNDO and POST_UNDO (docs/custom-code.md)", hookMacro(e.kind))
		}
		if len(m.callbacks[c.u.Object]) > 0 {
			return refused(c.file, name, "the patch uses both kpatch-macros.h callbacks and livesplice.h hooks for %s; use one of them", c.u.Object)
		}
		alias := fmt.Sprintf("__livesplice_hook_%s_%d", e.kind, len(m.obj.symbols))
		m.obj.addSymbol(&outSymbol{name: alias, bind: elf.STB_GLOBAL, typ: elf.STT_FUNC, sec: mi, value: uint64(off)})
		if m.hooks[c.u.Object] == nil {
			m.hooks[c.u.Object] = map[string][]hook{}
		}
		m.hooks[c.u.Object][e.kind] = append(m.hooks[c.u.Object][e.kind], hook{kind: e.kind, alias: alias, name: printable(name)})
	}
	if len(m.hooks[c.u.Object]) > 0 && len(m.callbacks[c.u.Object]) > 0 {
		return refused(c.file, c.u.Object, "the patch uses both kpatch-macros.h callbacks and livesplice.h hooks for %s; use one of them", c.u.Object)
	}
	return nil
}

// printable keeps a name safe inside a C format string.
func printable(name string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, name)
}

// oldHook reports whether the pre build has hook section si of the post
// build with a pointer to the same function.
func oldHook(post, pre *postObject, si int) bool {
	target := func(o *postObject, i int) string {
		rs := o.relocs[i]
		if len(rs) != 1 {
			return ""
		}
		sec, off, y := o.place(rs[0])
		switch {
		case sec != nil:
			return fmt.Sprintf("%s+%d", sec.Name, off)
		case y != nil:
			return y.Name
		}
		return ""
	}
	name := post.f.Sections[si].Name
	for pi, s := range pre.f.Sections {
		if s.Name == name && s.Type != elf.SHT_RELA {
			t := target(pre, pi)
			return t != "" && t == target(post, si)
		}
	}
	return false
}

// hookDispatchers writes, for object number oi, the klp callbacks that run
// its livesplice.h hooks, and returns the .callbacks initializer.
func hookDispatchers(b *bytes.Buffer, oi int, hs map[string][]hook) string {
	for _, k := range kernelHookKinds {
		for _, h := range hs[k] {
			ret := "void"
			if k == "pre_apply" || k == "pre_undo" {
				ret = "int"
			}
			fmt.Fprintf(b, "extern %s %s(void);\n", ret, h.alias)
		}
	}
	calls := func(kind string) string {
		var s strings.Builder
		for _, h := range hs[kind] {
			fmt.Fprintf(&s, "\t%s();\n", h.alias)
		}
		return s.String()
	}
	fmt.Fprintf(b, "\nstatic bool livesplice_post_patched_%d;\n\n", oi)
	fmt.Fprintf(b, "static void livesplice_fail_apply_%d(void)\n{\n%s}\n\n", oi, calls("fail_apply"))
	fmt.Fprintf(b, "static int livesplice_pre_patch_%d(struct klp_object *obj)\n{\n\tint ret;\n\n\tlivesplice_post_patched_%d = false;\n", oi, oi)
	for _, h := range hs["pre_apply"] {
		fmt.Fprintf(b, "\tret = %s();\n\tif (ret) {\n\t\tpr_warn(\"livesplice: \" KBUILD_MODNAME \": pre_apply hook %s vetoed the update (returned %%d)\\n\", ret);\n\t\tlivesplice_fail_apply_%d();\n\t\treturn -ECANCELED;\n\t}\n", h.alias, h.name, oi)
	}
	b.WriteString("\treturn 0;\n}\n\n")
	fmt.Fprintf(b, "static void livesplice_post_patch_%d(struct klp_object *obj)\n{\n\tlivesplice_post_patched_%d = true;\n%s}\n\n", oi, oi, calls("post_apply"))
	fmt.Fprintf(b, "static void livesplice_pre_unpatch_%d(struct klp_object *obj)\n{\n\tint ret;\n\n\t(void)ret;\n", oi)
	for _, h := range hs["pre_undo"] {
		fmt.Fprintf(b, "\tret = %s();\n\tif (ret)\n\t\tpr_warn(\"livesplice: \" KBUILD_MODNAME \": pre_undo hook %s returned %%d; a kernel undo cannot be vetoed\\n\", ret);\n", h.alias, h.name)
	}
	b.WriteString("}\n\n")
	fmt.Fprintf(b, "static void livesplice_post_unpatch_%d(struct klp_object *obj)\n{\n\tif (!livesplice_post_patched_%d) {\n\t\tlivesplice_fail_apply_%d();\n\t\treturn;\n\t}\n\tlivesplice_post_patched_%d = false;\n%s}\n\n", oi, oi, oi, oi, calls("post_undo"))
	return fmt.Sprintf(".callbacks = { .pre_patch = livesplice_pre_patch_%d, .post_patch = livesplice_post_patch_%d, .pre_unpatch = livesplice_pre_unpatch_%d, .post_unpatch = livesplice_post_unpatch_%d, }", oi, oi, oi, oi)
}
