package create

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"livesplice/include"
	"livesplice/internal/kbuild"
	"livesplice/internal/klp"
	"livesplice/internal/update"
)

// KernelOptions are the inputs of create --kernel.
type KernelOptions struct {
	Src      string // the running kernel's source tree (never modified)
	Config   string // its config
	Headers  string // its headers package directory (release, Module.symvers); optional
	Patch    string
	ID       string // default: the patch's base name without extension
	Cache    string // prepared trees; default kbuild.CacheRoot()
	Progress io.Writer
	KeepWork bool
}

// ModuleName is the livepatch module name for an update id: the kernel
// allows [A-Za-z0-9_] in module names.
func ModuleName(id string) string {
	var b strings.Builder
	b.WriteString("livesplice_")
	for _, c := range id {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
			b.WriteRune(c)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// maxModuleName is the longest module name the kernel takes:
// MODULE_NAME_LEN - 1 on 64-bit.
const maxModuleName = 55

// checkKernelID refuses an id that cannot name a kernel update: one
// update.ValidID rejects, or one whose module name is too long.
func checkKernelID(id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	if mod := ModuleName(id); len(mod) > maxModuleName {
		return fmt.Errorf("%w %q: its livepatch module name %s is longer than %d characters (give an id of at most %d characters with --id)",
			ErrBadID, id, mod, maxModuleName, maxModuleName-len(ModuleName("")))
	}
	return nil
}

// CreateKernel builds a kernel update: the livepatch module and the pre
// code of every replaced function.
func CreateKernel(ctx context.Context, o KernelOptions) (*update.File, error) {
	if o.ID == "" {
		o.ID = DefaultID(o.Patch)
	}
	if err := checkKernelID(o.ID); err != nil {
		return nil, err
	}
	mod := ModuleName(o.ID)
	patch, err := os.ReadFile(o.Patch)
	if err != nil {
		return nil, fmt.Errorf("read patch: %w", err)
	}
	patchAbs, err := filepath.Abs(o.Patch)
	if err != nil {
		return nil, err
	}
	files, err := kbuild.PatchedFiles(patch)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Patch, err)
	}
	tree, err := kbuild.Prepare(ctx, kbuild.Options{Src: o.Src, Config: o.Config, Headers: o.Headers, Cache: o.Cache, Log: o.Progress})
	if err != nil {
		return nil, err
	}
	units, optional, err := tree.Units(ctx, files)
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "livesplice-kcreate-")
	if err != nil {
		return nil, err
	}
	if o.KeepWork {
		fmt.Fprintf(os.Stderr, "livesplice: keeping work files in %s\n", work)
	} else {
		defer os.RemoveAll(work)
	}
	start := time.Now()
	// A kpatch-build patch includes "kpatch-macros.h" from the patched
	// file's directory: give it livesplice's.
	// livesplice.h (its kernel branch) for #include <livesplice.h>, in the
	// source's include directory of the builds only: also in the pre build
	// of a stacked update, whose tree has an earlier patch that uses it.
	extra := map[string][]byte{"include/" + include.HeaderName: include.Header}
	syscall := bytes.Contains(patch, []byte("kpatch-syscall.h"))
	if syscall || bytes.Contains(patch, []byte("kpatch-macros.h")) {
		for _, f := range files {
			extra[filepath.Join(filepath.Dir(f), "kpatch-macros.h")] = klp.KpatchMacros
			if syscall {
				extra[filepath.Join(filepath.Dir(f), "kpatch-syscall.h")] = klp.KpatchSyscall
			}
		}
	}
	built, err := tree.Compile(ctx, units, optional, patchAbs, filepath.Join(work, "units"), extra)
	if err != nil {
		return nil, err
	}
	progress(o.Progress, "compiled %d unit(s) pre and post in %.1fs", len(built), time.Since(start).Seconds())
	exports, err := tree.Exports()
	if err != nil {
		return nil, err
	}
	var in []klp.Unit
	for _, u := range built {
		in = append(in, klp.Unit{Rel: u.Rel, Object: u.Object, Pre: u.Pre, Post: u.Post})
	}
	lp, err := klp.Build(in, exports)
	if errors.Is(err, klp.ErrNoChange) {
		return nil, fmt.Errorf("%s: %w (nothing to splice)", o.Patch, ErrNoChange)
	}
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(work, "module")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	kbuildFile := fmt.Sprintf("obj-m := %s.o\n%s-y := livesplice_stub.o livesplice_patch.o\n", mod, mod)
	for name, data := range map[string][]byte{
		"Kbuild":                     []byte(kbuildFile),
		"livesplice_stub.c":          lp.Stub,
		"livesplice_patch.o_shipped": lp.Object,
		// modpost reads every object's kbuild command file (source checksums)
		".livesplice_patch.o.cmd": []byte("savedcmd_livesplice_patch.o := livesplice create\n"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return nil, err
		}
	}
	start = time.Now()
	ko, err := tree.BuildModule(ctx, dir, mod)
	if err != nil {
		return nil, err
	}
	if ko, err = klp.FixModule(ko); err != nil {
		return nil, err
	}
	progress(o.Progress, "built livepatch module %s in %.1fs", mod, time.Since(start).Seconds())
	sum := sha256.Sum256(patch)
	return &update.File{
		ID: o.ID, Kind: update.KindKernel, Patch: hex.EncodeToString(sum[:]),
		Kernel:  &update.Kernel{Release: tree.Release, ModuleName: mod, Module: ko},
		Targets: lp.Targets,
	}, nil
}

func progress(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, "livesplice: "+format+"\n", args...)
	}
}
