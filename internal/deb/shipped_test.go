package deb

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// MatchOutputs pairs a shipped file with the output of its build-id, else
// of its code (another build-id, another name), else the one output of
// its name, and refuses a file two outputs are named as, or none is.
func TestMatchOutputs(t *testing.T) {
	dir := t.TempDir()
	// link builds a program returning k with build-id id at rel in dir.
	link := func(rel string, k int, id string) string {
		src := filepath.Join(dir, fmt.Sprintf("p%d.c", k))
		write(t, src, fmt.Sprintf("int main(void) { return %d; }\n", k))
		out := filepath.Join(dir, rel)
		sh(t, dir, fmt.Sprintf("mkdir -p %s && gcc -O2 -Wl,--build-id=0x%s -o %s %s", filepath.Dir(out), id, out, src))
		return out
	}
	root := filepath.Join(dir, "root")
	outputs := []string{"a/prog", "b/prog", "c/dup", "d/dup", "e/solo"}
	for i, rel := range outputs {
		link(filepath.Join("root", rel), i+1, strings.Repeat(fmt.Sprint(i+1), 8))
	}
	byID := filepath.Join(dir, "s/prog1")
	sh(t, dir, "mkdir -p s && strip --strip-all -o s/prog1 root/a/prog")
	byCode := link("s/renamed", 2, "99999999") // b/prog's code, another build-id
	sh(t, dir, "strip --strip-all s/renamed")
	twoNamed := link("s/dup", 6, "66666666")
	none := link("s/none", 7, "77777777")
	byName := link("s/solo", 8, "88888888")

	matched, unmatched, err := MatchOutputs(root, outputs, []string{byID, byCode, twoNamed, none, byName})
	if err != nil {
		t.Fatal(err)
	}
	for inst, want := range map[string]Match{byID: {"a/prog", "build-id"}, byCode: {"b/prog", "code"}, byName: {"e/solo", "name"}} {
		if got, ok := matched[inst]; !ok || got != want {
			t.Errorf("%s: matched %+v (%v), want %+v; unmatched: %q", filepath.Base(inst), got, ok, want, unmatched[inst])
		}
	}
	if r, ok := unmatched[twoNamed]; !ok || !strings.Contains(r, "c/dup") || !strings.Contains(r, "d/dup") || !strings.Contains(r, "cannot tell") {
		t.Errorf("two outputs of its name: unmatched %q (%v), matched %+v", r, ok, matched[twoNamed])
	}
	if r, ok := unmatched[none]; !ok || !strings.Contains(r, "no file the build linked has its build-id, its code or its name") {
		t.Errorf("no output: unmatched %q (%v), matched %+v", r, ok, matched[none])
	}
	if len(matched)+len(unmatched) != 5 {
		t.Errorf("matched %v, unmatched %v: want 5 files in all", matched, unmatched)
	}
}
