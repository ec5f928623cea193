package build

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// ErrNoUnit is returned by CompileVariant for an object no logged compile
// made (an archive member matched by name, an object the build copied).
var ErrNoUnit = errors.New("no compile of it is known")

// CompileVariant compiles the unit whose object is rel (relative to the
// trees' roots) once more in the pre and in the post tree, as the build (or
// Recompile) compiled it and with extra appended last, into pre.o and
// post.o of a new directory under dir; it returns their paths. create uses
// it to build changed units with -fno-ipa-ra and tell the functions a
// patch changes from those only GCC's register allocation across calls
// changed.
func (r *Result) CompileVariant(ctx context.Context, rel string, extra []string, dir string) (pre, post string, err error) {
	pu, ok := r.Pre.unitOf(rel)
	if !ok || r.Pre.plain == nil {
		return "", "", fmt.Errorf("compile %s again: %w", rel, ErrNoUnit)
	}
	// The post tree's own record if its build made one (the patch may
	// change the unit's flags), else pre's, moved into post.
	qu, ok := r.Post.unitOf(rel)
	qfrom := r.Post.Root
	if !ok {
		qu, qfrom = pu, r.Pre.Root
	}
	out, err := os.MkdirTemp(dir, "variant-")
	if err != nil {
		return "", "", err
	}
	pre, post = filepath.Join(out, "pre.o"), filepath.Join(out, "post.o")
	if err := r.Pre.plain.compileTo(ctx, pu, r.Pre.Root, r.Pre.Root, pre, extra); err != nil {
		return "", "", fmt.Errorf("compile %s again in pre tree: %w", rel, err)
	}
	if err := r.Pre.plain.compileTo(ctx, qu, qfrom, r.Post.Root, post, extra); err != nil {
		return "", "", fmt.Errorf("compile %s again in post tree: %w", rel, err)
	}
	return pre, post, nil
}

// unitOf finds the unit that compiled the object rel.
func (t *Tree) unitOf(rel string) (unit, bool) {
	for _, u := range t.units {
		if u.obj == "" {
			continue
		}
		if r, ok := t.rel(u.obj); ok && r == rel {
			return u, true
		}
	}
	return unit{}, false
}

// compileTo compiles u (recorded in the tree rooted at from) in the tree
// at root into obj (absolute; named to gcc relative to the compile's
// directory, as a build names it), with the wrapper's flags and extra last.
func (pl *plainInfo) compileTo(ctx context.Context, u unit, from, root, obj string, extra []string) error {
	tr := func(p string) string { return reroot(p, from, root) }
	cwd := tr(u.cwd)
	args := unitArgs(u.args, u.cwd, u.source)
	for i := range args {
		args[i] = tr(args[i])
	}
	o := obj
	if r, err := filepath.Rel(cwd, obj); err == nil {
		o = r
	}
	args = append(args, "-c", "-o", o)
	args = append(args, compileFlagsInc(root, pl.src, pl.inc)...)
	args = append(args, extra...)
	cmd := exec.CommandContext(ctx, pl.compiler(u.compiler), args...)
	cmd.Dir = cwd
	cmd.Env = compileEnv(pl.env, u.env, cwd)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v:\n%s", err, LastLines(string(out), tailLines))
	}
	return nil
}
