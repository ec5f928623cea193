package create

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"livesplice/internal/amd64"
	"livesplice/internal/build"
	"livesplice/internal/clobber"
	"livesplice/internal/objdiff"
	"livesplice/internal/update"
)

// GCC's -fipa-ra (on at -O2) lets a caller keep values in call-clobbered
// registers across a call to a function of its unit whose code it knows
// leaves them alone. A fix that makes that function write more registers
// changes such callers too, though nothing in their source changed; a
// caller that never returns (main, a worker loop) could then never be
// replaced. So each changed unit is compiled once more, pre and post, with
// -fno-ipa-ra: a function that differs in the ordinary pair but not in that
// one changed only through register allocation and keeps running as it is.
// Every replaced function that such a kept caller reaches is entered
// through a stub that preserves the registers its old version left alone
// (amd64.PreservingStub), unless the new version surely writes none of
// them.

// fnKey names a function as objdiff's update.Function does.
type fnKey struct{ name, file string }

// ipaPlan is what -fipa-ra changes in one object's diff.
type ipaPlan struct {
	keep  map[fnKey]bool // replaced in the ordinary diff, unchanged without -fipa-ra
	stubs []stubPlan
	// back are functions only -fipa-ra changed that are replaced all the
	// same because new code refers to them: the function whose new code
	// does (their update.ReasonIPARA's detail).
	back map[fnKey]string
}

// stubPlan is a replaced function to enter through a preserving stub.
type stubPlan struct {
	fn   fnKey
	save clobber.Set
}

// planIPARA compares object rel (pre and post contents given) with its
// -fno-ipa-ra pair. A nil plan changes nothing. progress (nil: none) gets
// a line when the check could not be made.
func planIPARA(ctx context.Context, res *build.Result, rel string, preData, postData []byte, work string, progress io.Writer) (*ipaPlan, error) {
	norm, ok := diffFuncs(rel, preData, postData)
	if !ok {
		return nil, nil // the real diff reports what is wrong
	}
	var replaced []fnKey
	for k, st := range norm {
		if st == update.StatusReplaced {
			replaced = append(replaced, k)
		}
	}
	// A kept caller needs a replaced callee it reaches: if no replaced
	// function reaches another in the pre object's code, the changes are
	// independent and the two extra compiles are skipped. An object the
	// call graph cannot be read from is checked as before.
	pre, preErr := clobber.Load(preData)
	if preErr == nil && !reachesAnother(pre, replaced) {
		return nil, nil
	}
	vp, vq, err := res.CompileVariant(ctx, rel, []string{"-fno-ipa-ra"}, work)
	if errors.Is(err, build.ErrNoUnit) {
		// No compile of it is known (an archive member matched by name, a
		// copied object): every changed function is replaced, which is safe
		// (a caller that never returns is refused at apply by the safety
		// check), but the check was not made, so say so.
		if progress != nil {
			fmt.Fprintf(progress, "%s: -fipa-ra check not made (%v): every function whose code changed is replaced\n", rel, err)
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: tell the functions a patch changes from those only -fipa-ra changed: %w", rel, err)
	}
	vPre, err := os.ReadFile(vp)
	if err != nil {
		return nil, err
	}
	vPost, err := os.ReadFile(vq)
	if err != nil {
		return nil, err
	}
	without, ok := diffFuncs(rel, vPre, vPost)
	if !ok {
		return nil, nil
	}
	vobj, err := clobber.Load(vPre)
	if err != nil {
		return nil, nil
	}
	plan := &ipaPlan{keep: map[fnKey]bool{}}
	for _, k := range replaced {
		if _, changed := without[k]; !changed && vobj.Has(k.name) {
			plan.keep[k] = true
		}
	}
	if len(plan.keep) == 0 {
		return nil, nil
	}
	if preErr != nil {
		return nil, fmt.Errorf("%s: %w", rel, preErr)
	}
	post, err := clobber.Load(postData)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", rel, err)
	}
	// New code calling a kept function would run its old version, whose
	// registers differ from those the new code was compiled against:
	// such a function is replaced after all. A name the post object does
	// not have (a renumbered local clone) cannot be followed: then no
	// function is kept.
	for c := range norm {
		if !post.Has(c.name) {
			return nil, nil
		}
	}
	plan.back = map[fnKey]string{}
	for again := true; again; {
		again = false
		for k := range plan.keep {
			for c := range norm {
				if !plan.keep[c] && post.RefersTo(c.name, k.name) {
					delete(plan.keep, k)
					plan.back[k] = c.name
					again = true
					break
				}
			}
		}
	}
	if len(plan.keep) == 0 {
		return &ipaPlan{back: plan.back}, nil // nothing kept: only the reasons change
	}
	kept := make([]fnKey, 0, len(plan.keep))
	for k := range plan.keep {
		kept = append(kept, k)
	}
	sort.Slice(kept, func(i, j int) bool { return kept[i].name < kept[j].name })
	sort.Slice(replaced, func(i, j int) bool { return replaced[i].name < replaced[j].name })
	for _, f := range replaced {
		if plan.keep[f] {
			continue
		}
		caller := ""
		for _, k := range kept {
			if pre.Reaches(k.name, f.name) {
				caller = k.name
				break
			}
		}
		if caller == "" {
			continue
		}
		refuse := func(why string, args ...any) error {
			return &objdiff.RefusedError{File: rel, Symbol: caller, Reason: fmt.Sprintf("only GCC's -fipa-ra changed its code (it keeps values across calls to %s in registers the old %s left alone), and %s; change the fix so that %s writes no registers the old one left alone",
				f.name, f.name, fmt.Sprintf(why, args...), f.name)}
		}
		old, err := pre.Clobbers(f.name, clobber.Under)
		if err != nil {
			return nil, refuse("the old code of %s cannot be read (%v)", f.name, err)
		}
		// Unknown (an IPA clone's changed arguments): no register is
		// taken for the return value, so the stub is left out only if
		// the new code surely writes nothing the old one left alone.
		sig, sigErr := pre.Signature(f.name)
		save := clobber.CallClobbered &^ old &^ sig.Returns
		now := clobber.CallClobbered
		if post.Has(f.name) {
			if now, err = post.Clobbers(f.name, clobber.Over); err != nil {
				now = clobber.CallClobbered
			}
		}
		if save&now == 0 {
			continue
		}
		switch {
		case sigErr != nil:
			return nil, refuse("the arguments of %s are not known (%v)", f.name, sigErr)
		case sig.Varargs:
			return nil, refuse("%s takes a variable argument list, which a stub saving %s cannot pass on", f.name, short(save))
		case sig.Stack:
			return nil, refuse("%s takes arguments on the stack, which a stub saving %s would move", f.name, short(save))
		}
		plan.stubs = append(plan.stubs, stubPlan{fn: f, save: save})
	}
	return plan, nil
}

// reachesAnother reports whether some function of fns reaches another
// one of them through o's code, or a name is not in o (then nothing is
// known).
func reachesAnother(o *clobber.Object, fns []fnKey) bool {
	for _, a := range fns {
		if !o.Has(a.name) {
			return true
		}
		for _, b := range fns {
			if a.name != b.name && o.Reaches(a.name, b.name) {
				return true
			}
		}
	}
	return false
}

// diffFuncs diffs one object pair on its own and returns the status of
// each replaced and new function; ok is false if objdiff refuses it.
func diffFuncs(rel string, pre, post []byte) (map[fnKey]string, bool) {
	b := objdiff.NewBuilder(rel, "", "")
	if err := b.AddObject(rel, pre, post); err != nil {
		return nil, false
	}
	out := map[fnKey]string{}
	for _, f := range b.Target().Functions {
		out[fnKey{f.Name, f.File}] = f.Status
	}
	return out, true
}

// addStubs makes each planned function of t enter its new code through a
// preserving stub: a new text section, with its own call frame
// information, that the function's entry jump goes to.
func addStubs(t *update.Target, stubs []stubPlan) error {
	for _, p := range stubs {
		i := slices.IndexFunc(t.Functions, func(f update.Function) bool {
			return f.Name == p.fn.name && f.File == p.fn.file && f.Status == update.StatusReplaced
		})
		if i < 0 {
			return fmt.Errorf("preserving stub for %s: the function is not in the update", p.fn.name)
		}
		fn := &t.Functions[i]
		st := amd64.NewPreservingStub(p.save.GPRs(), p.save.XMMs())
		code := len(t.Sections)
		t.Sections = append(t.Sections, update.Section{
			Name: ".text.livesplice.preserve." + fn.Name, Kind: update.KindText, Align: 16,
			Size: uint64(len(st.Code)), Data: st.Code,
			Relocs: []update.Reloc{{Offset: uint64(st.CallField), Type: uint32(elf.R_X86_64_PC32),
				Symbol: sectionSymbol(t, fn.Section), Addend: -4}},
		})
		t.Sections = append(t.Sections, update.Section{
			Name: update.EHFrameName, Kind: update.KindRodata, Align: 8,
			Size: uint64(len(st.Frame)), Data: st.Frame,
			Relocs: []update.Reloc{{Offset: uint64(st.FramePCField), Type: uint32(elf.R_X86_64_PC32),
				Symbol: sectionSymbol(t, code)}},
		})
		fn.Section, fn.Size = code, uint64(len(st.Code))
	}
	return nil
}

// sectionSymbol is the index of the symbol for the start of section i.
func sectionSymbol(t *update.Target, i int) int {
	for j, y := range t.Symbols {
		if y.Kind == update.SymSection && y.Section == i && y.Offset == 0 {
			return j
		}
	}
	t.Symbols = append(t.Symbols, update.Symbol{Kind: update.SymSection, Section: i})
	return len(t.Symbols) - 1
}

// short names a register set in a few words.
func short(s clobber.Set) string {
	g := s &^ (0xffff << clobber.X0)
	if x := len(s.XMMs()); x > 0 {
		if g == 0 {
			return fmt.Sprintf("%d xmm registers", x)
		}
		return fmt.Sprintf("%s and %d xmm registers", g, x)
	}
	return s.String()
}

// describe is the plan in one line.
func (p *ipaPlan) describe(rel string) string {
	var keep, back []string
	for k := range p.keep {
		keep = append(keep, k.name)
	}
	for k, c := range p.back {
		back = append(back, fmt.Sprintf("%s (new code in %s refers to it)", k.name, c))
	}
	sort.Strings(keep)
	sort.Strings(back)
	var parts []string
	if len(keep) > 0 {
		parts = append(parts, "kept "+strings.Join(keep, ", ")+" (only GCC's -fipa-ra changed it)")
	}
	if len(back) > 0 {
		parts = append(parts, "replaced "+strings.Join(back, ", ")+" though only GCC's -fipa-ra changed it")
	}
	for _, s := range p.stubs {
		parts = append(parts, fmt.Sprintf("%s entered through a stub saving %s", s.fn.name, short(s.save)))
	}
	return rel + ": " + strings.Join(parts, "; ")
}

// addReasons gives each function of t that only -fipa-ra changed but is
// replaced all the same (back) the ipa-ra reason, in place of the
// changed-code one that said no more.
func addReasons(t *update.Target, back map[fnKey]string) {
	for i := range t.Functions {
		fn := &t.Functions[i]
		c, ok := back[fnKey{fn.Name, fn.File}]
		if !ok || fn.Status != update.StatusReplaced {
			continue
		}
		r := update.Reason{Kind: update.ReasonIPARA, Detail: c}
		if j := slices.IndexFunc(fn.Why, func(r update.Reason) bool { return r.Kind == update.ReasonCode }); j >= 0 {
			fn.Why[j] = r
		} else {
			fn.Why = append(fn.Why, r)
		}
	}
}
