package deb

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"livesplice/internal/build"
)

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func sh(t *testing.T, dir, command string) {
	t.Helper()
	cmd := exec.Command("sh", "-c", command)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", command, err, out)
	}
}

// CodeDiff keeps code files only, and its diff turns the old tree's code
// into the new one's.
func TestCodeDiff(t *testing.T) {
	dir := t.TempDir()
	pre, post := filepath.Join(dir, "pre"), filepath.Join(dir, "post")
	for _, root := range []string{pre, post} {
		write(t, filepath.Join(root, "src/a.c"), "int a(void) { return 1; }\n")
		write(t, filepath.Join(root, "README"), "old\n")
		write(t, filepath.Join(root, "debian/changelog"), "old\n")
	}
	d, err := CodeDiff(pre, post)
	if err != nil || len(d) != 0 {
		t.Fatalf("equal trees: diff %q, %v", d, err)
	}
	write(t, filepath.Join(post, "README"), "new\n")
	write(t, filepath.Join(post, "debian/changelog"), "new\n")
	write(t, filepath.Join(post, "debian/patches/fix.c"), "int x;\n")
	write(t, filepath.Join(post, ".pc/fix/src/a.c"), "int x;\n")
	if d, err = CodeDiff(pre, post); err != nil || len(d) != 0 {
		t.Fatalf("no code changed: diff %q, %v", d, err)
	}
	write(t, filepath.Join(post, "src/a.c"), "int a(void) { return 2; }\n")
	write(t, filepath.Join(post, "src/b.h"), "int b(void);\n")
	d, err = CodeDiff(pre, post)
	if err != nil {
		t.Fatal(err)
	}
	s := string(d)
	if !strings.Contains(s, "+++ b/src/a.c") || !strings.Contains(s, "+++ b/src/b.h") || strings.Contains(s, "README") || strings.Contains(s, "debian") || strings.Contains(s, ".pc") {
		t.Fatalf("code diff:\n%s", s)
	}
	write(t, filepath.Join(dir, "fix.patch"), s)
	sh(t, pre, "patch -p1 --batch -i ../fix.patch")
	for _, f := range []string{"src/a.c", "src/b.h"} {
		a, _ := os.ReadFile(filepath.Join(pre, f))
		b, _ := os.ReadFile(filepath.Join(post, f))
		if string(a) != string(b) {
			t.Fatalf("%s after the patch: %q, want %q", f, a, b)
		}
	}
}

const libSrc = `
static int __attribute__((noinline)) twice(int x) { return 2 * x + %s; }
static int counter;
int lib_entry(int x) { counter++; return twice(x) + counter; }
`

// A stripped file gets the symbols of a rebuild with the same code, and
// none from a rebuild with other code.
func TestRecoverOne(t *testing.T) {
	dir := t.TempDir()
	link := func(name, k string) string {
		write(t, filepath.Join(dir, name+".c"), strings.Replace(libSrc, "%s", k, 1))
		sh(t, dir, "gcc -O2 -g -shared -fPIC -Wl,--build-id -o "+name+".so "+name+".c")
		return filepath.Join(dir, name+".so")
	}
	same := link("libsame", "1")
	other := link("libother", "7")
	shipped := filepath.Join(dir, "shipped", "libsame.so")
	sh(t, dir, "mkdir shipped && strip --strip-all -o shipped/libsame.so libsame.so")

	r := recoverOne(shipped, []string{same})
	if r.Symtab == nil {
		t.Fatalf("identical rebuild: nothing recovered: %s", r.Reason)
	}
	// The shipped file's build-id as binutils reads it, not as we do.
	out, err := exec.Command("readelf", "-n", shipped).Output()
	m := regexp.MustCompile(`Build ID: ([0-9a-f]+)`).FindSubmatch(out)
	if err != nil || m == nil || r.Symtab.BuildID != string(m[1]) {
		t.Fatalf("recovered for build-id %s, readelf -n says %q (%v)", r.Symtab.BuildID, out, err)
	}
	found := map[string]bool{}
	for _, y := range r.Symtab.Symbols {
		found[y.Name] = y.Global
		if y.Name == "twice" && (!y.Func || y.File != "libsame.c" || y.Size == 0) {
			t.Fatalf("twice: %+v", y)
		}
	}
	if g, ok := found["twice"]; !ok || g {
		t.Fatalf("static twice not recovered as static: %v", found)
	}
	if g, ok := found["counter"]; !ok || g {
		t.Fatalf("static counter not recovered: %v", found)
	}
	if !found["lib_entry"] {
		t.Fatalf("lib_entry not recovered as global: %v", found)
	}

	if r := recoverOne(shipped, []string{other}); r.Symtab != nil || !strings.Contains(r.Reason, "differs") {
		t.Fatalf("other code: recovered %v, reason %q", r.Symtab != nil, r.Reason)
	}
	if r := recoverOne(shipped, nil); r.Symtab != nil || r.Reason == "" {
		t.Fatalf("no rebuilt file: %+v", r)
	}

	// RecoverTree takes the output each installed file is, wherever it is
	// in the tree, and no other output of the same name.
	sh(t, dir, "mkdir -p tree/sub && cp libsame.so tree/sub/ && cp libother.so tree/libsame.so")
	tree := &build.Tree{Root: filepath.Join(dir, "tree"), Outputs: []build.Output{{Rel: "libsame.so"}, {Rel: "sub/libsame.so"}}}
	none := filepath.Join(dir, "shipped", "libnone.so")
	got, err := RecoverTree(tree, []string{shipped, none}, map[string]string{shipped: "sub/libsame.so"})
	if err != nil {
		t.Fatal(err)
	}
	if got[shipped].Symtab == nil || got[shipped].Symtab.BuildID != r.Symtab.BuildID {
		t.Fatalf("RecoverTree: %+v", got[shipped])
	}
	if r := got[none]; r.Symtab != nil || !strings.Contains(r.Reason, "no file of that name") {
		t.Fatalf("RecoverTree of a file the build did not make: %+v", r)
	}
	got, err = RecoverTree(tree, []string{shipped}, map[string]string{shipped: "libsame.so"})
	if err != nil {
		t.Fatal(err)
	}
	if r := got[shipped]; r.Symtab != nil || !strings.Contains(r.Reason, "differs") {
		t.Fatalf("RecoverTree from an output with other code: %+v", r)
	}
}
