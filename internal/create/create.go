// Package create turns a source patch into an update file: it has the
// project built pre and post (package build), diffs every object that
// differs (package objdiff) and writes the update deterministically.
package create

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"livesplice/include"
	"livesplice/internal/build"
	"livesplice/internal/elfsym"
	"livesplice/internal/objdiff"
	"livesplice/internal/update"
)

// ErrNoChange is returned for a patch that changes no code.
var ErrNoChange = errors.New("the patch changes no code")

// ErrBadID is returned, before any work, for an update id that cannot
// name an update (or, for a kernel update, its livepatch module): a bad
// command line.
var ErrBadID = errors.New("bad update id")

// checkID refuses an id update.ValidID rejects.
func checkID(id string) error {
	if !update.ValidID(id) {
		return fmt.Errorf("%w %q: use at most 64 letters, digits, '.', '_' and '-', not starting with '.' or '-' (give one with --id)", ErrBadID, id)
	}
	return nil
}

// Options are create's inputs.
type Options struct {
	Src      string
	Patch    string
	BuildCmd string
	ID       string // default: the patch's base name without extension
	Progress io.Writer
	KeepWork bool // keep the pre/post trees (for debugging)
	Self     string
}

// DefaultID is the update id create uses for a patch file.
func DefaultID(patch string) string {
	base := filepath.Base(patch)
	if ext := filepath.Ext(base); ext != "" && ext != base {
		base = strings.TrimSuffix(base, ext)
	}
	return base
}

// Create builds the update.
func Create(ctx context.Context, o Options) (*update.File, error) {
	if o.ID == "" {
		o.ID = DefaultID(o.Patch)
	}
	if err := checkID(o.ID); err != nil {
		return nil, err
	}
	patch, err := os.ReadFile(o.Patch)
	if err != nil {
		return nil, fmt.Errorf("read patch: %w", err)
	}
	if st, err := os.Stat(o.Src); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("source tree %s: not a directory", o.Src)
	}
	work, err := os.MkdirTemp("", "livesplice-create-")
	if err != nil {
		return nil, err
	}
	if o.KeepWork {
		fmt.Fprintf(os.Stderr, "livesplice: keeping build trees in %s\n", work)
	} else {
		defer os.RemoveAll(work)
	}
	src, _ := filepath.Abs(o.Src)
	pat, _ := filepath.Abs(o.Patch)
	res, err := build.Run(ctx, build.Options{Src: src, Patch: pat, BuildCmd: o.BuildCmd, WorkDir: work, Self: o.Self, Progress: o.Progress})
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(patch)
	f := &update.File{ID: o.ID, Kind: update.KindProcess, Patch: hex.EncodeToString(sum[:])}
	preOut := map[string]build.Output{}
	for _, out := range res.Pre.Outputs {
		preOut[out.Rel] = out
	}
	preObj := map[string]bool{}
	for _, ob := range res.Pre.Objects {
		preObj[ob.Rel] = true
	}
	for _, out := range res.Post.Outputs {
		pre, ok := preOut[out.Rel]
		if !ok {
			continue // a new output: nothing runs it yet
		}
		t, err := diffOutput(ctx, res, pre, out, preObj, work, o.Progress)
		if err != nil {
			return nil, err
		}
		if t != nil {
			f.Targets = append(f.Targets, *t)
		}
	}
	if len(f.Targets) == 0 {
		return nil, fmt.Errorf("%s: %w (nothing to splice)", o.Patch, ErrNoChange)
	}
	return f, nil
}

// diffOutput diffs one output's changed objects into its target (nil if
// nothing changed). progress (nil: none) gets a line per object whose
// diff -fipa-ra changed or whose check could not be made, and one if the
// reasons could not use the trees' source diff.
func diffOutput(ctx context.Context, res *build.Result, pre, post build.Output, preObj map[string]bool, work string, progress io.Writer) (*update.Target, error) {
	pf, err := os.Open(filepath.Join(res.Pre.Root, pre.Rel))
	if err != nil {
		return nil, err
	}
	defer pf.Close()
	tab, err := elfsym.Load(pf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pre.Rel, err)
	}
	b := objdiff.NewBuilder(post.Rel, tab.Soname, tab.BuildID)
	b.SetTrees(res.Pre.Root, res.Post.Root)
	var stubs []stubPlan
	back := map[fnKey]string{}
	for _, rel := range post.Objects {
		postData, err := os.ReadFile(filepath.Join(res.Post.Root, rel))
		if err != nil {
			return nil, err
		}
		var preData []byte
		if preObj[rel] {
			if preData, err = os.ReadFile(filepath.Join(res.Pre.Root, rel)); err != nil {
				return nil, err
			}
			if bytes.Equal(preData, postData) {
				continue
			}
		}
		// Callers that only -fipa-ra changed stay as they run (ipara.go).
		var keep func(name, file string) bool
		if preData != nil {
			plan, err := planIPARA(ctx, res, rel, preData, postData, work, progress)
			if err != nil {
				return nil, err
			}
			if plan != nil {
				if progress != nil {
					fmt.Fprintln(progress, plan.describe(rel))
				}
				keep = func(name, file string) bool { return plan.keep[fnKey{name, file}] }
				stubs = append(stubs, plan.stubs...)
				maps.Copy(back, plan.back)
			}
		}
		if err := b.AddObjectKeeping(rel, preData, postData, keep); err != nil {
			return nil, err
		}
	}
	if err := b.SourceErr(); err != nil && progress != nil {
		// Only the reasons (info) are weaker: the code is diffed all the same.
		fmt.Fprintf(progress, "%s: reasons from the code alone for a source file the trees' diff could not compare: %v\n", post.Rel, err)
	}
	if err := b.LayoutErr(); err != nil {
		return nil, err
	}
	// A tree whose code calls the runtime already (an earlier update's
	// patch is in it) has its copy in the process: the new code shares its
	// shadows, found through that update's definitions at apply.
	if usesShadows(b) && !callsShadows(pf) {
		obj, err := shadowRuntime(work)
		if err != nil {
			return nil, err
		}
		if err := b.AddObject(include.ShadowRuntimeName, nil, obj); err != nil {
			return nil, fmt.Errorf("shadow variable runtime: %w", err)
		}
	}
	if !b.Changed() {
		return nil, nil
	}
	t := b.Target()
	addReasons(t, back)
	if err := addStubs(t, stubs); err != nil {
		return nil, err
	}
	return t, nil
}

// shadowFuncs are the functions of the shadow-variable runtime (livesplice.h).
var shadowFuncs = []string{"livesplice_shadow_get", "livesplice_shadow_get_or_alloc",
	"livesplice_shadow_free", "livesplice_shadow_free_all"}

func usesShadows(b *objdiff.Builder) bool {
	for _, n := range shadowFuncs {
		if b.References(n) {
			return true
		}
	}
	return false
}

// callsShadows reports whether a linked output refers to the shadow runtime.
func callsShadows(r io.ReaderAt) bool {
	f, err := elf.NewFile(r)
	if err != nil {
		return false
	}
	syms, _ := f.Symbols()
	dyn, _ := f.DynamicSymbols()
	for _, y := range append(syms, dyn...) {
		if slices.Contains(shadowFuncs, y.Name) {
			return true
		}
	}
	return false
}

// shadowRuntime compiles the shadow-variable runtime into an object that
// the update carries as new code, in a directory of its own under work.
func shadowRuntime(work string) ([]byte, error) {
	dir, err := os.MkdirTemp(work, "shadow-")
	if err != nil {
		return nil, err
	}
	src := filepath.Join(dir, include.ShadowRuntimeName)
	obj := filepath.Join(dir, "livesplice_shadow.o")
	if err := os.WriteFile(filepath.Join(dir, include.HeaderName), include.Header, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(src, include.ShadowRuntime, 0o644); err != nil {
		return nil, err
	}
	// Position-independent, no stack protector (no TLS canary), one
	// section per function and datum as the differ wants.
	cmd := exec.Command("gcc", "-O2", "-fPIC", "-fno-stack-protector", "-fcf-protection=none",
		"-ffunction-sections", "-fdata-sections", "-c", include.ShadowRuntimeName, "-o", obj)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("compile the shadow variable runtime: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return os.ReadFile(obj)
}
