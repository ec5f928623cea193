package kbuild

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestPatchedFiles(t *testing.T) {
	patch := `diff -u a/fs/proc/cmdline.c b/fs/proc/cmdline.c
--- a/fs/proc/cmdline.c	2026-11-26 20:51:40.319382436 +0000
+++ b/fs/proc/cmdline.c	2026-11-26 20:51:40.326457474 +0000
@@ -1 +1 @@
-x
+y
--- /dev/null
+++ b/fs/proc/new.c
@@ -0,0 +1 @@
+z
--- a/include/linux/gone.h
+++ /dev/null
@@ -1 +0,0 @@
-w
`
	got, err := PatchedFiles([]byte(patch))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"fs/proc/cmdline.c", "fs/proc/new.c", "include/linux/gone.h"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if _, err := PatchedFiles([]byte("--- a/../x.c\n+++ b/../x.c\n")); err == nil {
		t.Fatal("a path leaving the tree was accepted")
	}
	if _, err := PatchedFiles([]byte("hello\n")); err == nil {
		t.Fatal("a text without files was accepted")
	}
}

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUnits(t *testing.T) {
	src := t.TempDir()
	writeFiles(t, src, map[string]string{
		"Makefile":                      "",
		"include/linux/foo.h":           "",
		"arch/x86/include/asm/bar.h":    "",
		"drivers/x/a.c":                 "#include <linux/foo.h>\n",
		"drivers/x/b.c":                 "#include \"local.h\"\n",
		"drivers/x/local.h":             "",
		"drivers/x/c.c":                 "  #  include <asm/bar.h>\n",
		"drivers/y/b.c":                 "#include \"local.h\"\n", // another local.h
		"tools/t.c":                     "#include <linux/foo.h>\n",
		"drivers/x/d.c":                 "/* linux/foo.h */\n",
		"arch/x86/kernel/e.S":           "",
		"Documentation/x.rst":           "",
		"drivers/x/not_including_foo.c": "#include <linux/foo.hh>\n",
	})
	tr := &Tree{Src: src}
	ctx := context.Background()
	for _, c := range []struct {
		files []string
		want  []string
	}{
		{[]string{"include/linux/foo.h"}, []string{"drivers/x/a.o"}},
		{[]string{"drivers/x/local.h"}, []string{"drivers/x/b.o"}},
		{[]string{"arch/x86/include/asm/bar.h"}, []string{"drivers/x/c.o"}},
		{[]string{"drivers/x/a.c", "arch/x86/kernel/e.S", "Documentation/x.rst", "drivers/x/a.c"}, []string{"arch/x86/kernel/e.o", "drivers/x/a.o"}},
	} {
		got, optional, err := tr.Units(ctx, c.files)
		if err != nil {
			t.Fatalf("%v: %v", c.files, err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%v: got %v, want %v", c.files, got, c.want)
		}
		for _, u := range got {
			if fromHeader := strings.HasSuffix(c.files[0], ".h"); optional[u] != fromHeader {
				t.Errorf("%v: unit %s optional %v", c.files, u, optional[u])
			}
		}
	}
	for _, bad := range [][]string{{"drivers/x/Makefile"}, {"Documentation/x.rst"}} {
		if _, _, err := tr.Units(ctx, bad); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%v: want ErrUnsupported, got %v", bad, err)
		}
	}
}

func TestRelease(t *testing.T) {
	h := t.TempDir()
	writeFiles(t, h, map[string]string{"include/generated/utsrelease.h": "#define UTS_RELEASE \"6.1.0-56-amd64\"\n"})
	if r, err := release(h, "/x/.config"); err != nil || r != "6.1.0-56-amd64" {
		t.Fatalf("headers: %q %v", r, err)
	}
	if r, err := release("", "/boot/config-6.1.0-9-amd64"); err != nil || r != "6.1.0-9-amd64" {
		t.Fatalf("config name: %q %v", r, err)
	}
	if _, err := release("", "/x/.config"); err == nil {
		t.Fatal("no release source accepted")
	}
}

func TestPrepareRefusesKernelWithoutLivepatch(t *testing.T) {
	d := t.TempDir()
	writeFiles(t, d, map[string]string{"src/Makefile": "", "config-6.1.0-1-amd64": "CONFIG_X=y\n# CONFIG_LIVEPATCH is not set\n"})
	_, err := Prepare(context.Background(), Options{Src: filepath.Join(d, "src"), Config: filepath.Join(d, "config-6.1.0-1-amd64"), Cache: filepath.Join(d, "cache")})
	if err == nil || !strings.Contains(err.Error(), "CONFIG_LIVEPATCH") {
		t.Fatalf("want a refusal naming CONFIG_LIVEPATCH, got %v", err)
	}
}

func TestSavedCommand(t *testing.T) {
	out := t.TempDir()
	tr := &Tree{Out: out}
	write := func(first string) {
		writeFiles(t, out, map[string]string{"fs/proc/.cmdline.o.cmd": first + "\n\nsource_fs/proc/cmdline.o := /src/fs/proc/cmdline.c\n"})
	}
	write("cmd_fs/proc/cmdline.o := gcc " + UnitCFLAGS + " -DX='\"$$(pound)\"' -o fs/proc/cmdline.o /src/fs/proc/cmdline.c $(pound)x ; ./tools/objtool/objtool fs/proc/cmdline.o")
	c, ok := tr.savedCommand("fs/proc/cmdline.o")
	if want := "gcc " + UnitCFLAGS + " -DX='\"$(pound)\"' -o fs/proc/cmdline.o /src/fs/proc/cmdline.c #x ; ./tools/objtool/objtool fs/proc/cmdline.o"; !ok || c != want {
		t.Fatalf("got %q %v, want %q", c, ok, want)
	}
	for _, bad := range []string{
		"cmd_fs/proc/cmdline.o := gcc -o fs/proc/cmdline.o x.c",              // other flags
		"cmd_fs/proc/other.o := gcc " + UnitCFLAGS,                           // another unit
		"cmd_fs/proc/cmdline.o := gcc " + UnitCFLAGS + " $(call x) -o y x.c", // a make construct
	} {
		write(bad)
		if c, ok := tr.savedCommand("fs/proc/cmdline.o"); ok {
			t.Errorf("%q: accepted as %q", bad, c)
		}
	}
}

func TestPreUpToDate(t *testing.T) {
	out, src := t.TempDir(), t.TempDir()
	tr := &Tree{Out: out, Src: src}
	writeFiles(t, src, map[string]string{"a.c": "", "a.h": ""})
	writeFiles(t, out, map[string]string{
		"include/config/X": "",
		".a.o.cmd": "cmd_a.o := gcc " + UnitCFLAGS + " -c a.c\n\nsource_a.o := " + filepath.Join(src, "a.c") +
			"\n\ndeps_a.o := \\\n  " + filepath.Join(src, "a.h") + " \\\n    $(wildcard include/config/X) \\\n    $(wildcard include/config/MISSING) \\\n\na.o: $(deps_a.o)\n",
	})
	if tr.preUpToDate("a.o") {
		t.Fatal("a missing object is up to date")
	}
	writeFiles(t, out, map[string]string{"a.o": "obj"})
	old := time.Now().Add(-time.Hour)
	for _, p := range []string{filepath.Join(src, "a.c"), filepath.Join(src, "a.h"), filepath.Join(out, "include/config/X")} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	if !tr.preUpToDate("a.o") {
		t.Fatal("an object newer than its sources is not up to date")
	}
	now := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(src, "a.h"), now, now); err != nil {
		t.Fatal(err)
	}
	if tr.preUpToDate("a.o") {
		t.Fatal("an object older than a header it includes is up to date")
	}
}
