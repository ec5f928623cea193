package build_test

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"livesplice/internal/build"
)

// A clone of a plain build serves a Recompile of its own and leaves the
// original alone; Readers names the units that read the changed files no
// considered unit reads, with the outputs they are linked into (none for
// an object only archived, never linked).
func TestCloneAndReaders(t *testing.T) {
	src := t.TempDir()
	files := map[string]string{
		"Makefile": "all: prog liblone.a\n" +
			"prog: main.o\n\t$(CC) -o prog main.o\n" +
			"liblone.a: lone.o\n\tar rcs liblone.a lone.o\n" +
			"%.o: %.c\n\t$(CC) -O2 -c -o $@ $<\n",
		"main.c":     "int main(void) { return 0; }\n",
		"lone.c":     "int lone(int x) { return x + 1; }\n",
		"lone.patch": "--- a/lone.c\n+++ b/lone.c\n@@ -1 +1 @@\n-int lone(int x) { return x + 1; }\n+int lone(int x) { return x + 2; }\n",
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(src, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	work := t.TempDir()
	pre, err := build.RunPlain(context.Background(), build.Options{Src: src, WorkDir: work, Self: self(t)})
	if err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, pre.Root)
	if err := os.Mkdir(filepath.Join(work, "one"), 0o755); err != nil {
		t.Fatal(err)
	}
	clone, err := pre.Clone(filepath.Join(work, "one", "pre"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := build.Recompile(context.Background(), clone, build.RecompileOptions{
		Patch:   filepath.Join(src, "lone.patch"),
		Outputs: func(rel string) bool { return rel == "prog" },
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(snapshot(t, pre.Root), before) {
		t.Fatal("Recompile of a clone changed the original tree")
	}
	if !reflect.DeepEqual(res.Unread, []string{"lone.c"}) {
		t.Fatalf("unread %v, want [lone.c]", res.Unread)
	}
	rs, err := res.Readers(context.Background(), res.Unread)
	if err != nil {
		t.Fatal(err)
	}
	if want := []build.Reader{{File: "lone.c", Unit: "lone.o"}}; !reflect.DeepEqual(rs, want) {
		t.Fatalf("readers %+v, want %+v", rs, want)
	}
	if _, err := pre.Clone(filepath.Join(work, "one", "pre")); err == nil {
		t.Fatal("Clone over an existing directory")
	}
}
