package build_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"livesplice/internal/build"
)

// realMake builds a copy of testdata/<name> with make and the real
// compiler (cc from PATH, no livesplice anywhere) and returns its root.
func realMake(t *testing.T, name string) string {
	t.Helper()
	dir := t.TempDir()
	copyDir(t, testdata(t, name), dir)
	cmd := exec.Command("make")
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k != "CC" && k != "CXX" && k != "PWD" && !strings.HasPrefix(k, "LIVESPLICE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "PWD="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make: %v\n%s", err, out)
	}
	return dir
}

// snapshot maps every file of a tree to its contents and mtime.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		m[rel] = fi.ModTime().String() + "\x00" + string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// RunPlain's build is the project's own, byte for byte; Recompile then
// compiles only the units the patch affects again, in pre and post, with
// function sections, and leaves everything else of the trees alone.
func TestPlainBuildAndRecompile(t *testing.T) {
	src := testdata(t, "units")
	ref := realMake(t, "units")
	for _, tc := range []struct {
		name    string
		patch   string
		outputs func(string) bool
		file    string   // the file it changes
		changed []string // objects that differ pre/post
		fns     map[string]string
	}{
		{"calc", "calc.patch", nil, "calc.c", []string{"calc.o"}, map[string]string{"calc.o": ".text.calc_scale"}},
		// calc.h is read by main.c and calc.c.
		{"header", "header.patch", nil, "calc.h", []string{"calc.o", "main.o"}, map[string]string{"calc.o": ".text.calc", "main.o": ".text.startup.main"}},
		// aux.c is a unit's source and #included by bundle.c.
		{"included-source", "aux.patch", nil, "aux.c", []string{"aux.o", "bundle.o"}, map[string]string{"aux.o": ".text.aux", "bundle.o": ".text.aux"}},
		// Only prog's units are asked for: bundle.o stays plain.
		{"outputs", "aux.patch", func(rel string) bool { return rel == "prog" }, "aux.c", []string{"aux.o"}, map[string]string{"aux.o": ".text.aux"}},
		// Compiled and linked in one step: its object is made in both trees.
		{"compile-and-link", "helper.patch", nil, "helper.c", []string{"tool-helper.o"}, map[string]string{"tool-helper.o": ".text.helper"}},
		{"no-code", "readme.patch", nil, "README", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var progress bytes.Buffer
			work := t.TempDir()
			pre, err := build.RunPlain(context.Background(), build.Options{Src: src, WorkDir: work, Self: self(t), Progress: &progress})
			if err != nil {
				t.Fatal(err)
			}
			if got := objectRels(pre); !reflect.DeepEqual(got, []string{"aux.o", "bundle.o", "calc.o", "main.o", "shape.o"}) {
				t.Fatalf("plain objects %v", got)
			}
			wantOut := []build.Output{
				{Rel: "bundle", Objects: []string{"bundle.o"}},
				{Rel: "libshape.so.1", Shared: true, Objects: []string{"shape.o"}},
				{Rel: "prog", Objects: []string{"aux.o", "calc.o", "main.o"}},
				{Rel: "tool"},
			}
			if !reflect.DeepEqual(pre.Outputs, wantOut) {
				t.Fatalf("plain outputs %+v, want %+v", pre.Outputs, wantOut)
			}
			for _, f := range []string{"main.o", "calc.o", "aux.o", "bundle.o", "shape.o", "libaux.a", "prog", "libshape.so.1", "tool", "bundle", "calc.d"} {
				a, err1 := os.ReadFile(filepath.Join(ref, f))
				b, err2 := os.ReadFile(filepath.Join(pre.Root, f))
				if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
					t.Errorf("%s: plain build differs from a build with the real compiler (%v %v)", f, err1, err2)
				}
			}
			before := snapshot(t, pre.Root)

			res, err := build.Recompile(context.Background(), pre, build.RecompileOptions{Patch: filepath.Join(src, tc.patch), Progress: &progress, Outputs: tc.outputs})
			t.Logf("progress:\n%s", progress.String())
			if err != nil {
				t.Fatal(err)
			}
			if res.Pre.Root != filepath.Join(filepath.Dir(res.Pre.Root), "pre") || res.Post.Root != filepath.Join(filepath.Dir(res.Pre.Root), "post") {
				t.Errorf("roots %s %s", res.Pre.Root, res.Post.Root)
			}
			if !reflect.DeepEqual(res.Pre.Outputs, res.Post.Outputs) {
				t.Errorf("outputs differ: %+v %+v", res.Pre.Outputs, res.Post.Outputs)
			}
			checkPatched(t, res, tc.changed...)
			for obj, sec := range tc.fns {
				for _, tr := range []*build.Tree{res.Pre, res.Post} {
					wantSections(t, filepath.Join(tr.Root, obj), sec)
				}
			}
			// Not recompiled: still the plain build's (no function
			// sections), every other file of pre untouched (.d files too).
			plainSec := map[string]string{"main.o": ".text.startup.main", "calc.o": ".text.calc", "aux.o": ".text.aux", "bundle.o": ".text.aux", "shape.o": ".text.shape_area"}
			after := snapshot(t, res.Pre.Root)
			for f, v := range before {
				if slices.Contains(tc.changed, f) {
					continue
				}
				if after[f] != v {
					t.Errorf("pre's %s changed", f)
				}
				if sec, ok := plainSec[f]; ok {
					for _, tr := range []*build.Tree{res.Pre, res.Post} {
						if slices.Contains(sectionNames(t, filepath.Join(tr.Root, f)), sec) {
							t.Errorf("%s/%s was recompiled", tr.Root, f)
						}
					}
				}
			}
			for f := range after {
				if _, ok := before[f]; !ok && !slices.Contains(tc.changed, f) {
					t.Errorf("pre has a new file %s", f)
				}
			}
			// post is pre plus the patch and the recompiled objects.
			postFiles := snapshot(t, res.Post.Root)
			for f, v := range postFiles {
				_, b, _ := strings.Cut(v, "\x00")
				_, pb, _ := strings.Cut(after[f], "\x00")
				if differ, want := b != pb, f == tc.file || slices.Contains(tc.changed, f); differ != want {
					t.Errorf("post's %s: differs from pre's %v, want %v", f, differ, want)
				}
			}
			if len(postFiles) != len(after) {
				t.Errorf("post has %d files, pre %d", len(postFiles), len(after))
			}
			if tc.name == "compile-and-link" {
				for _, tr := range []*build.Tree{res.Pre, res.Post} {
					if !slices.Contains(tr.Objects, build.Object{Rel: "tool-helper.o", Source: "helper.c"}) {
						t.Errorf("%s objects %+v", tr.Root, tr.Objects)
					}
					if o := findOutput(t, tr, "tool"); !reflect.DeepEqual(o.Objects, []string{"tool-helper.o"}) {
						t.Errorf("%s tool objects %v", tr.Root, o.Objects)
					}
				}
			}
		})
	}
}
