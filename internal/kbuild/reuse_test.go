package kbuild

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for rel, data := range files {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestChangedFiles(t *testing.T) {
	d := t.TempDir()
	a := filepath.Join(d, "a")
	writeTree(t, a, map[string]string{"Makefile": "all:\n", "Kconfig": "config X\n", "fs/x.c": "int x;\n", "fs/y.c": "int y;\n",
		"include/linux/z.h": "#define Z 1\n", "scripts/mod/m.c": "int m;\n"})
	copyOf := func(name string) string {
		b := filepath.Join(d, name)
		if out, err := exec.Command("cp", "-al", a, b).CombinedOutput(); err != nil {
			t.Fatalf("cp -al: %v %s", err, out)
		}
		return b
	}
	// Hard links, patched files replaced (as patch does): only those differ.
	b := copyOf("b")
	for _, f := range []string{"fs/x.c", "include/linux/z.h"} {
		os.Remove(filepath.Join(b, f))
		writeTree(t, b, map[string]string{f: "changed\n"})
	}
	writeTree(t, b, map[string]string{"fs/new.c": "int n;\n"})
	// The same content with another time (a copy that did not keep it).
	os.Remove(filepath.Join(b, "fs/y.c"))
	writeTree(t, b, map[string]string{"fs/y.c": "int y;\n"})
	future := time.Now().Add(time.Hour)
	os.Chtimes(filepath.Join(b, "fs/y.c"), future, future)
	got, err := changedFiles(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"fs/new.c", "fs/x.c", "include/linux/z.h"}; !slices.Equal(got, want) {
		t.Errorf("changed %v, want %v", got, want)
	}
	// What prepare reads or builds may not differ.
	for i, f := range []string{"Kconfig", "scripts/mod/m.c", "Makefile"} {
		c := copyOf("c" + string(rune('0'+i)))
		os.Remove(filepath.Join(c, f))
		writeTree(t, c, map[string]string{f: "other\n"})
		if _, err := changedFiles(a, c); !errors.Is(err, errNotReusable) {
			t.Errorf("%s changed: err = %v, want errNotReusable", f, err)
		}
	}
	if _, err := changedFiles(filepath.Join(d, "gone"), b); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing prepared source: err = %v", err)
	}
}
