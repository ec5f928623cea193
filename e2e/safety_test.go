package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// prepare copies a case's source twice: one tree built the ordinary way
// and started, one pristine for create; it returns the started program and
// the update created from fix.patch.
func prepare(t *testing.T, name string) (*prog, string) {
	t.Helper()
	caseDir, _ := filepath.Abs(filepath.Join("testdata", name))
	work := t.TempDir()
	src, runDir := filepath.Join(work, "src"), filepath.Join(work, "run")
	sh(t, work, "mkdir src run")
	copyTree(t, filepath.Join(caseDir, "src"), src)
	copyTree(t, src, runDir)
	sh(t, runDir, "make")
	upd := filepath.Join(work, "fix.lsu")
	mustRun(t, "create", "--src", src, "-o", upd, filepath.Join(caseDir, "fix.patch"))
	return start(t, runDir, "./prog"), upd
}

// A thread that never leaves a function being replaced: apply waits until
// the deadline, refuses naming the function and thread, changes nothing.
func TestBusyFunctionRefused(t *testing.T) {
	p, upd := prepare(t, "busy")
	if got := p.query("x"); got != "value=1" {
		t.Fatalf("before: %q", got)
	}
	r := run(t, "apply", "--deadline", "1s", "--pid", p.pid(), upd)
	if r.exit != 4 || !strings.Contains(r.stderr, "spin") || !strings.Contains(r.stderr, "thread") {
		t.Fatalf("apply: want exit 4 naming spin and its thread, got %d: %s", r.exit, r.stderr)
	}
	if got := p.query("x"); got != "value=1" {
		t.Fatalf("after refused apply: %q (value() must be unchanged)", got)
	}
	if r := mustRun(t, "show", "--pid", p.pid(), "--json"); !strings.Contains(r.stdout, `"updates": []`) {
		t.Fatalf("show after refused apply: %s", r.stdout)
	}
}

// Eight threads call the patched functions without pause while apply and
// undo run 100 times: no crash, every result old or new, and the last
// state is what the last command said.
func TestHammerApplyUndo(t *testing.T) {
	slow(t)
	p, upd := prepare(t, "hammer")
	n := 100
	if testing.Short() {
		n = 10
	}
	for i := 0; i < n; i++ {
		mustRun(t, "apply", "--pid", p.pid(), upd)
		if got := p.query("x"); !strings.HasSuffix(got, "f=5") {
			t.Fatalf("round %d after apply: %q", i, got)
		}
		mustRun(t, "undo", "--pid", p.pid(), "fix")
		if got := p.query("x"); !strings.HasSuffix(got, "f=4") {
			t.Fatalf("round %d after undo: %q", i, got)
		}
	}
	got := p.query("x")
	var iters, wrong, f int64
	if _, err := fmt.Sscanf(got, "iters=%d wrong=%d f=%d", &iters, &wrong, &f); err != nil {
		t.Fatalf("status %q: %v", got, err)
	}
	if wrong != 0 || iters == 0 {
		t.Fatalf("after %d rounds: %s", n, got)
	}
}
