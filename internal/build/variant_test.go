package build_test

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"livesplice/internal/build"
)

// CompileVariant compiles a unit again in both trees as the build did,
// with the extra flags last, beside the trees' own objects.
func TestCompileVariant(t *testing.T) {
	res := mustRun(t, "separate", "util.patch")
	dir := t.TempDir()
	pre, post, err := res.CompileVariant(context.Background(), "util.o", []string{"-fno-ipa-ra", "-DVARIANT"}, dir)
	if err != nil {
		t.Fatal(err)
	}
	code := func(p string) []byte {
		f, err := elf.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		s := f.Section(".text.scale") // the wrapper's -ffunction-sections
		if s == nil {
			t.Fatalf("%s: no .text.scale", p)
		}
		b, err := s.Data()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// pre and post differ as the patch says, and match the builds' own.
	if bytes.Equal(code(pre), code(post)) {
		t.Error("pre and post variants of util.o have the same code")
	}
	if !bytes.Equal(code(pre), code(res.Pre.Root+"/util.o")) || !bytes.Equal(code(post), code(res.Post.Root+"/util.o")) {
		t.Error("a variant's code differs from its tree's own object")
	}
	for _, p := range []string{pre, post} {
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}
	if _, _, err := res.CompileVariant(context.Background(), "nosuch.o", nil, dir); !errors.Is(err, build.ErrNoUnit) {
		t.Errorf("unknown object: %v, want ErrNoUnit", err)
	}
}

// After RunPlain and Recompile (create --deb) the variant comes from the
// recorded compile too, rerooted into post, and its code is what
// Recompile made in each tree.
func TestCompileVariantPlain(t *testing.T) {
	src := testdata(t, "separate")
	work := t.TempDir()
	pre, err := build.RunPlain(context.Background(), build.Options{Src: src, WorkDir: work, Self: self(t)})
	if err != nil {
		t.Fatal(err)
	}
	res, err := build.Recompile(context.Background(), pre, build.RecompileOptions{Patch: filepath.Join(src, "util.patch")})
	if err != nil {
		t.Fatal(err)
	}
	p, q, err := res.CompileVariant(context.Background(), "util.o", []string{"-fno-ipa-ra"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	text := func(path string) []byte {
		f, err := elf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		s := f.Section(".text.scale")
		if s == nil {
			t.Fatalf("%s: no .text.scale", path)
		}
		b, _ := s.Data()
		return b
	}
	if !bytes.Equal(text(p), text(filepath.Join(res.Pre.Root, "util.o"))) || !bytes.Equal(text(q), text(filepath.Join(res.Post.Root, "util.o"))) {
		t.Error("a variant's code differs from the recompiled object of its tree")
	}
	if bytes.Equal(text(p), text(q)) {
		t.Error("pre and post variants have the same code")
	}
}

// A clone of a plain tree (create --deb --split: one plain build, one
// clone per update) keeps what CompileVariant needs: the -fipa-ra check
// runs on each split update as on a single one.
func TestCompileVariantClone(t *testing.T) {
	src := testdata(t, "separate")
	pre, err := build.RunPlain(context.Background(), build.Options{Src: src, WorkDir: t.TempDir(), Self: self(t)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := pre.Clone(filepath.Join(t.TempDir(), "pre"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := build.Recompile(context.Background(), c, build.RecompileOptions{Patch: filepath.Join(src, "util.patch")})
	if err != nil {
		t.Fatal(err)
	}
	p, q, err := res.CompileVariant(context.Background(), "util.o", []string{"-fno-ipa-ra"}, t.TempDir())
	if err != nil {
		t.Fatalf("CompileVariant on a recompiled clone: %v", err)
	}
	for _, f := range []string{p, q} {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
}
