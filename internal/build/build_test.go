package build_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"livesplice/internal/build"
)

// The test binary doubles as the compiler wrapper: Run links cc, gcc, c++
// and g++ to it.
func TestMain(m *testing.M) {
	if build.IsWrapperInvocation() {
		os.Exit(build.WrapperMain())
	}
	// Under -race every wrapper run would otherwise sleep 1s at exit.
	if os.Getenv("GORACE") == "" {
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	os.Exit(m.Run())
}

func self(t *testing.T) string {
	t.Helper()
	p, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func testdata(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// run builds testdata/<tree> with the given patch (a file in that tree).
func run(t *testing.T, src, patch, buildCmd string) (*build.Result, error) {
	t.Helper()
	var progress bytes.Buffer
	res, err := build.Run(context.Background(), build.Options{
		Src:      src,
		Patch:    filepath.Join(src, patch),
		BuildCmd: buildCmd,
		WorkDir:  t.TempDir(),
		Self:     self(t),
		Progress: &progress,
	})
	t.Logf("progress:\n%s", progress.String())
	return res, err
}

func mustRun(t *testing.T, tree, patch string) *build.Result {
	t.Helper()
	res, err := run(t, testdata(t, tree), patch, "")
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func objectRels(tr *build.Tree) []string {
	var r []string
	for _, o := range tr.Objects {
		r = append(r, o.Rel)
	}
	return r
}

func findOutput(t *testing.T, tr *build.Tree, rel string) build.Output {
	t.Helper()
	for _, o := range tr.Outputs {
		if o.Rel == rel {
			return o
		}
	}
	t.Fatalf("no output %s in %s: %+v", rel, tr.Root, tr.Outputs)
	return build.Output{}
}

func read(t *testing.T, tr *build.Tree, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(tr.Root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sectionNames(t *testing.T, file string) []string {
	t.Helper()
	f, err := elf.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	for _, s := range f.Sections {
		names = append(names, s.Name)
	}
	return names
}

func wantSections(t *testing.T, file string, want ...string) {
	t.Helper()
	names := sectionNames(t, file)
	for _, w := range want {
		if !slices.Contains(names, w) {
			t.Errorf("%s has no section %s; sections: %v", file, w, names)
		}
	}
}

// checkPatched checks that of two trees' objects exactly the listed ones
// differ.
func checkPatched(t *testing.T, res *build.Result, changed ...string) {
	t.Helper()
	if !reflect.DeepEqual(res.Pre.Objects, res.Post.Objects) {
		t.Fatalf("pre and post objects differ:\n%+v\n%+v", res.Pre.Objects, res.Post.Objects)
	}
	for _, o := range res.Pre.Objects {
		differ := !bytes.Equal(read(t, res.Pre, o.Rel), read(t, res.Post, o.Rel))
		if want := slices.Contains(changed, o.Rel); differ != want {
			t.Errorf("object %s: differs=%v, want %v", o.Rel, differ, want)
		}
	}
}

func TestSeparateCompileAndLink(t *testing.T) {
	res := mustRun(t, "separate", "util.patch")
	want := []build.Object{{Rel: "main.o", Source: "main.c"}, {Rel: "util.o", Source: "util.c"}}
	for _, tr := range []*build.Tree{res.Pre, res.Post} {
		if !reflect.DeepEqual(tr.Objects, want) {
			t.Errorf("%s objects = %+v, want %+v", tr.Root, tr.Objects, want)
		}
		wantOut := []build.Output{{Rel: "prog", Objects: []string{"main.o", "util.o"}}}
		if !reflect.DeepEqual(tr.Outputs, wantOut) {
			t.Errorf("%s outputs = %+v, want %+v", tr.Root, tr.Outputs, wantOut)
		}
		wantSections(t, filepath.Join(tr.Root, "util.o"), ".text.add", ".text.scale")
		wantSections(t, filepath.Join(tr.Root, "main.o"), ".text.startup.main")
	}
	checkPatched(t, res, "util.o")
	if filepath.Base(res.Pre.Root) != "pre" || filepath.Base(res.Post.Root) != "post" {
		t.Errorf("roots %s %s", res.Pre.Root, res.Post.Root)
	}
}

func TestCompileAndLinkInOne(t *testing.T) {
	res := mustRun(t, "oneline", "util.patch")
	want := []build.Object{{Rel: "prog-main.o", Source: "main.c"}, {Rel: "prog-util.o", Source: "util.c"}}
	for _, tr := range []*build.Tree{res.Pre, res.Post} {
		if !reflect.DeepEqual(tr.Objects, want) {
			t.Errorf("%s objects = %+v, want %+v", tr.Root, tr.Objects, want)
		}
		wantOut := []build.Output{{Rel: "prog", Objects: []string{"prog-main.o", "prog-util.o"}}}
		if !reflect.DeepEqual(tr.Outputs, wantOut) {
			t.Errorf("%s outputs = %+v, want %+v", tr.Root, tr.Outputs, wantOut)
		}
		wantSections(t, filepath.Join(tr.Root, "prog-util.o"), ".text.add", ".text.scale")
	}
	checkPatched(t, res, "prog-util.o")
}

func TestSharedLibrary(t *testing.T) {
	res := mustRun(t, "shared", "foo.patch")
	for _, tr := range []*build.Tree{res.Pre, res.Post} {
		want := []build.Output{
			{Rel: "lib/libfoo.so.1", Shared: true, Objects: []string{"lib/foo.o"}},
			{Rel: "prog", Objects: []string{"main.o"}},
		}
		if !reflect.DeepEqual(tr.Outputs, want) {
			t.Errorf("%s outputs = %+v, want %+v", tr.Root, tr.Outputs, want)
		}
		wantSections(t, filepath.Join(tr.Root, "lib/foo.o"), ".text.foo_value", ".text.foo_twice")
	}
	checkPatched(t, res, "lib/foo.o")
}

func TestStaticArchive(t *testing.T) {
	res := mustRun(t, "archive", "bar.patch")
	for _, tr := range []*build.Tree{res.Pre, res.Post} {
		// tool/bar1.o shares the member's base name but not its contents.
		prog := findOutput(t, tr, "prog")
		want := []string{"a_long_member_name_for_gnu_ar.o", "bar1.o", "main.o"}
		if !reflect.DeepEqual(prog.Objects, want) {
			t.Errorf("%s prog objects = %v, want %v", tr.Root, prog.Objects, want)
		}
		tool := findOutput(t, tr, "tool/tool")
		if !reflect.DeepEqual(tool.Objects, []string{"tool/bar1.o"}) {
			t.Errorf("%s tool objects = %v", tr.Root, tool.Objects)
		}
		if len(tr.Outputs) != 2 {
			t.Errorf("%s outputs = %+v; the archive is not an output", tr.Root, tr.Outputs)
		}
	}
	checkPatched(t, res, "bar1.o")
}

// hashTree hashes every path, mode, symlink target and file content.
func hashTree(t *testing.T, root string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v %v\n", p, fi.Mode(), fi.ModTime().UnixNano())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "-> %s\n", l)
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			io.Copy(h, f)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", from+"/.", to).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
}

func TestAlreadyBuiltSource(t *testing.T) {
	src := t.TempDir()
	copyDir(t, testdata(t, "separate"), src)
	// A symlink and an executable script must come through as they are.
	if err := os.Symlink("util.h", filepath.Join(src, "link.h")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "script.sh"), []byte("#!/bin/sh\n"), 0o751); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(src, ".git"), 0o755); err != nil {
		t.Fatal(err)
	}
	make := exec.Command("make", "CC=gcc")
	make.Dir = src
	if out, err := make.CombinedOutput(); err != nil {
		t.Fatalf("make: %v\n%s", err, out)
	}
	if slices.Contains(sectionNames(t, filepath.Join(src, "util.o")), ".text.add") {
		t.Fatal("plain build already has function sections; the test proves nothing")
	}
	before := hashTree(t, src)

	res, err := run(t, src, "util.patch", "")
	if err != nil {
		t.Fatal(err)
	}
	if after := hashTree(t, src); after != before {
		t.Error("Run modified the source tree")
	}
	for _, tr := range []*build.Tree{res.Pre, res.Post} {
		wantSections(t, filepath.Join(tr.Root, "util.o"), ".text.add", ".text.scale")
		if got := objectRels(tr); !reflect.DeepEqual(got, []string{"main.o", "util.o"}) {
			t.Errorf("%s objects %v", tr.Root, got)
		}
		if _, err := os.Lstat(filepath.Join(tr.Root, ".git")); err == nil {
			t.Errorf("%s: .git was copied", tr.Root)
		}
		if l, err := os.Readlink(filepath.Join(tr.Root, "link.h")); err != nil || l != "util.h" {
			t.Errorf("%s: link.h: %q %v", tr.Root, l, err)
		}
		if fi, err := os.Stat(filepath.Join(tr.Root, "script.sh")); err != nil || fi.Mode().Perm() != 0o751 {
			t.Errorf("%s: script.sh mode: %v %v", tr.Root, fi.Mode(), err)
		}
	}
	checkPatched(t, res, "util.o")
}

func TestReproducibleAndSourcePaths(t *testing.T) {
	src := testdata(t, "stamp")
	res := mustRun(t, "stamp", "main.patch")
	checkPatched(t, res, "main.o")
	for _, tr := range []*build.Tree{res.Pre, res.Post} {
		obj := read(t, tr, "stamp.o")
		if !bytes.Contains(obj, []byte(filepath.Join(src, "stamp.c"))) {
			t.Errorf("%s/stamp.o does not contain the source path %s", tr.Root, src)
		}
		if bytes.Contains(obj, []byte(tr.Root)) {
			t.Errorf("%s/stamp.o contains its tree's path", tr.Root)
		}
		if !bytes.Contains(obj, []byte("Jan  1 1970 00:00:00")) {
			t.Errorf("%s/stamp.o: __DATE__/__TIME__ not pinned", tr.Root)
		}
	}
}

func TestPatchDoesNotApply(t *testing.T) {
	_, err := run(t, testdata(t, "separate"), "nomatch.patch", "")
	if err == nil || !strings.Contains(err.Error(), "util.c") || !strings.Contains(err.Error(), "FAILED") {
		t.Fatalf("err = %v, want patch failure naming util.c", err)
	}
	t.Log(err)
}

func TestBuildFailure(t *testing.T) {
	_, err := run(t, testdata(t, "separate"), "break.patch", "")
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	t.Logf("error:\n%s", msg)
	for _, want := range []string{"post tree", "util.c", "error"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "pre tree") {
		t.Errorf("error blames the pre tree:\n%s", msg)
	}
}

func TestCompilerBypassed(t *testing.T) {
	_, err := run(t, testdata(t, "separate"), "util.patch", "/usr/bin/gcc -O2 -o prog main.c util.c")
	if err == nil || !strings.Contains(err.Error(), "compiled nothing through livesplice's compiler wrapper") {
		t.Fatalf("err = %v", err)
	}
}
