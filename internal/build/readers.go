package build

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// Reader is a unit of a plain build that compiles or reads a file.
type Reader struct {
	File    string   // the file, relative to the roots
	Unit    string   // the unit's object relative to the root (its source when it has none)
	Outputs []string // the outputs it is linked into (Rel, sorted); none: no linked output the build log shows holds it
}

// Readers returns the units of the pre tree, linked into an output or
// not, that compile one of files (relative to the roots) or read it in
// post (gcc -M): what create --deb needs to prove that a changed file
// reaches no installed file (docs/deb.md).
func (r *Result) Readers(ctx context.Context, files []string) ([]Reader, error) {
	pre := r.Pre
	if !pre.isPlain() || r.Post == nil {
		return nil, errors.New("build: Readers needs a Result made by Recompile")
	}
	want := map[string]bool{}
	for _, f := range files {
		want[f] = true
	}
	linkedInto := map[string][]string{}
	for _, o := range pre.Outputs {
		for _, ob := range o.Objects {
			linkedInto[ob] = append(linkedInto[ob], o.Rel)
		}
	}
	rc := &recompiler{pre: pre, post: r.Post.Root}
	us := pre.units
	deps := make([][]string, len(us))
	errs := make([]error, len(us))
	parallel(ctx, len(us), func(i int) {
		if src, ok := pre.rel(us[i].source); ok && want[src] {
			deps[i] = []string{src}
			return
		}
		deps[i], errs[i] = rc.deps(ctx, us[i])
	})
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var out []Reader
	for i, u := range us {
		name, outs := pre.relOrAbs(u.source), []string(nil)
		if u.obj != "" {
			name = pre.relOrAbs(u.obj)
			if rel, ok := pre.rel(u.obj); ok {
				outs = slices.Clone(linkedInto[rel])
			}
		}
		if u.link != "" && !slices.Contains(outs, u.link) {
			outs = append(outs, u.link)
		}
		slices.Sort(outs)
		for _, d := range deps[i] {
			if want[d] {
				out = append(out, Reader{File: d, Unit: name, Outputs: outs})
			}
		}
	}
	return out, nil
}
