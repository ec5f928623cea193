package build_test

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"os"
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
