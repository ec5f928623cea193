package build

import (
	"errors"
	"fmt"
	"os"
	"slices"
)

// Clone copies a built plain tree (RunPlain) to dir, which must not exist,
// keeping mtimes, and returns the copy as a Tree that Recompile takes: one
// plain build serves several updates (create --deb --split, docs/deb.md),
// each recompiling in its own copy. The units' paths and arguments are
// moved to the copy; the prefix map still names the original source.
func (t *Tree) Clone(dir string) (*Tree, error) {
	if !t.isPlain() {
		return nil, errors.New("build: Clone needs a tree made by RunPlain")
	}
	if _, err := os.Lstat(dir); err == nil {
		return nil, fmt.Errorf("build: %s already exists", dir)
	}
	if err := copyTree(t.Root, dir, copyOpts{}); err != nil {
		return nil, fmt.Errorf("build: copying %s: %w", t.Root, err)
	}
	c := &Tree{Root: dir, Objects: slices.Clone(t.Objects), plain: t.plain}
	for _, o := range t.Outputs {
		o.Objects = slices.Clone(o.Objects)
		c.Outputs = append(c.Outputs, o)
	}
	tr := func(s string) string { return reroot(s, t.Root, dir) }
	for _, u := range t.units {
		u.obj, u.source, u.cwd = tr(u.obj), tr(u.source), tr(u.cwd)
		u.args = slices.Clone(u.args)
		for i := range u.args {
			u.args[i] = tr(u.args[i])
		}
		u.env = slices.Clone(u.env)
		for i := range u.env {
			u.env[i] = tr(u.env[i])
		}
		c.units = append(c.units, u)
	}
	return c, nil
}
