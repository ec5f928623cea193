package repo

import (
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// tree reads every file under dir (metadata, targets, history, root, keys).
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[strings.TrimPrefix(p, dir)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	if maps.Equal(before, after) {
		return
	}
	for p := range before {
		if before[p] != after[p] {
			t.Errorf("%s changed %s", what, p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s created %s", what, p)
		}
	}
}

// publishedRepo is a repository with update a published.
func publishedRepo(t *testing.T) (r, a string) {
	t.Helper()
	dir := t.TempDir()
	r = filepath.Join(dir, "repo")
	if err := Init(r, Options{}); err != nil {
		t.Fatal(err)
	}
	a = writeUpdate(t, dir, "a")
	if err := Add(r, []string{a}, nil, Options{}); err != nil {
		t.Fatal(err)
	}
	return r, a
}

// Removing an id the stream does not have is refused, also alongside one
// it has: nothing is removed and no metadata is re-signed.
func TestRemoveUnknown(t *testing.T) {
	r, _ := publishedRepo(t)
	before := tree(t, r)
	for _, ids := range [][]string{{"nope"}, {"a", "nope"}} {
		err := Remove(r, ids, Options{})
		if err == nil || !strings.Contains(err.Error(), "update nope is not in the stream") {
			t.Errorf("repo remove %v: %v", ids, err)
		}
		sameTree(t, "repo remove "+strings.Join(ids, " "), before, tree(t, r))
	}
	rp, err := load(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rp.targets.Signed.Targets[FileName("a")]; !ok {
		t.Error("a was removed")
	}
}

// A --binary without a GNU build-id (or not an ELF file) cannot key a
// target: the whole add is refused, the update is not published.
func TestAddBinaryWithoutBuildID(t *testing.T) {
	dir := t.TempDir()
	r := filepath.Join(dir, "repo")
	if err := Init(r, Options{}); err != nil {
		t.Fatal(err)
	}
	a := writeUpdate(t, dir, "a") // its target is bin/prog
	if err := os.WriteFile(filepath.Join(dir, "prog.c"), []byte("int main(void){return 0;}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(dir, "prog")
	if out, err := exec.Command("gcc", "-Wl,--build-id=none", "-o", prog, filepath.Join(dir, "prog.c")).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	if out, _ := exec.Command("readelf", "-n", prog).Output(); strings.Contains(string(out), "Build ID") {
		t.Fatalf("gcc -Wl,--build-id=none left a build-id:\n%s", out)
	}
	text := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(text, []byte("not a program\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := tree(t, r)
	for _, c := range []struct{ binary, msg string }{
		{prog, "--binary " + prog + ": no GNU build-id note"},
		{text, "--binary " + text + ": not an ELF file"},
	} {
		err := Add(r, []string{a}, []string{c.binary}, Options{})
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("repo add --binary %s: %v, want %q", c.binary, err, c.msg)
		}
		sameTree(t, "repo add --binary "+c.binary, before, tree(t, r))
	}
}
