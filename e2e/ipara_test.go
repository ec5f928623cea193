package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// GCC's -fipa-ra: main loops for ever calling handle and keeps a value in
// a call-clobbered register across the call; the fix makes handle call a
// function. create keeps main (only register allocation changed it) and
// enters the new handle through a stub that preserves what the old one
// left alone, so the update applies and main's value survives. At -O0
// there is no -fipa-ra: handle alone is replaced, as always.
func TestIPARA(t *testing.T) {
	slow(t)
	variants := []struct{ name, build string }{
		{"O0", "CFLAGS='-O0 -g'"},
		{"O3", "CFLAGS='-O3 -g'"},
		{"nopie", "CFLAGS='-O2 -g -fno-pie' LDFLAGS=-no-pie"},
		{"O0-nopie", "CFLAGS='-O0 -g -fno-pie' LDFLAGS=-no-pie"},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			if os.Getuid() != 0 {
				t.Skip("needs root or ptrace of own processes")
			}
			runCase(t, "ipa_ra", v.build)
		})
	}
}

// The same update applied with --all to two processes, and undone.
func TestIPARAAll(t *testing.T) {
	slow(t)
	if os.Getuid() != 0 {
		t.Skip("needs root or ptrace of own processes")
	}
	work, upd := fleetCase(t, "ipa_ra", map[string]string{"src": "src", "run": "src"}, "fix.patch", "ipa-ra-e2e-fix")
	var ps []*prog
	for i := 0; i < 2; i++ {
		p := start(t, filepath.Join(work, "run"), "./ipa_ra_e2e_target")
		if got := p.query("1"); got != "conn=1 handled=2 sum=24" {
			t.Fatalf("before: %q", got)
		}
		ps = append(ps, p)
	}
	r := run(t, "apply", "--all", upd)
	if r.exit != 0 || strings.TrimSpace(r.stdout) != "patched 2, skipped 0, failed 0" {
		t.Fatalf("apply --all: exit %d, stdout %q, stderr %q", r.exit, r.stdout, r.stderr)
	}
	for _, p := range ps {
		if got := p.query("1"); got != "conn=1 handled=104 sum=856" {
			t.Fatalf("pid %s after apply --all: %q", p.pid(), got)
		}
	}
	r = mustRun(t, "undo", "--all", "ipa-ra-e2e-fix")
	if strings.TrimSpace(r.stdout) != "unpatched 2, skipped 0, failed 0" {
		t.Fatalf("undo --all: %q", r.stdout)
	}
	for _, p := range ps {
		if got := p.query("1"); got != "conn=1 handled=6 sum=904" {
			t.Fatalf("pid %s after undo --all: %q", p.pid(), got)
		}
	}
}

// A thread in the new handle, entered through the preserving stub, is
// found by undo's safety check (its stack unwound through the stub's call
// frame information): undo waits, and succeeds once the thread has left.
func TestIPARABusyInStub(t *testing.T) {
	slow(t)
	if os.Getuid() != 0 {
		t.Skip("needs root or ptrace of own processes")
	}
	caseDir, _ := filepath.Abs("testdata/ipa_ra")
	work := t.TempDir()
	sh(t, work, "mkdir src run")
	copyTree(t, filepath.Join(caseDir, "src"), filepath.Join(work, "src"))
	copyTree(t, filepath.Join(caseDir, "src"), filepath.Join(work, "run"))
	sh(t, filepath.Join(work, "run"), "make -s")
	upd := filepath.Join(work, "block.lsu")
	r := mustRun(t, "create", "--src", filepath.Join(work, "src"), "--id", "block", "-o", upd, filepath.Join(caseDir, "block.patch"))
	p := start(t, filepath.Join(work, "run"), "./ipa_ra_e2e_target")
	if got := p.query("1"); got != "conn=1 handled=2 sum=24" {
		t.Fatalf("before: %q", got)
	}
	mustRun(t, "apply", "--pid", p.pid(), upd)
	// Connection 3 makes the new handle wait for a line: main is then
	// in it, below the stub.
	if got := p.query("3"); got != "waiting" {
		t.Fatalf("query 3: %q", got)
	}
	r = run(t, "undo", "--pid", p.pid(), "--deadline", "1s", "block")
	t.Logf("undo: %s", r.stderr)
	if r.exit != 4 || !strings.Contains(r.stderr, "busy") {
		t.Fatalf("undo with a thread in the new code: exit %d: %s", r.exit, r.stderr)
	}
	if got := p.query("go"); got != "conn=3 handled=102 sum=2282" {
		t.Fatalf("after the wait: %q", got)
	}
	mustRun(t, "undo", "--pid", p.pid(), "block")
	if got := p.query("1"); got != "conn=1 handled=4 sum=2300" {
		t.Fatalf("after undo: %q", got)
	}
}
