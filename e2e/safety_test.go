package e2e

import (
	"bufio"
	"fmt"
	"os/exec"
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

// One thread caught at its return stub, one that never leaves the
// function: the apply is refused at its deadline, and the caught thread is
// let go meanwhile rather than frozen until then. main answers a query only
// after the caught thread made two more calls, so the answer comes while
// apply still runs (its deadline is beyond the query's 20 s wait) only if
// the held thread was released.
func TestBusyHeldReleased(t *testing.T) {
	p, upd := prepare(t, "held_release")
	if got := p.query("x"); !strings.HasPrefix(got, "value=1 ") {
		t.Fatalf("before: %q", got)
	}
	cmd := exec.Command(livesplice, "apply", "-v", "--deadline", "60s", "--pid", p.pid(), upd)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	var log strings.Builder
	held := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			var n, h int
			if _, err := fmt.Sscanf(sc.Text(), "safety check: %d busy threads sent through return stubs, %d held there", &n, &h); err == nil && h > 0 && !sent {
				sent = true
				held <- true
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill() // the livesplice this test started, by pid
		<-exited
	})
	select {
	case <-held:
	case err := <-exited:
		t.Fatalf("apply ended before holding a thread: %v\n%s", err, log.String())
	}
	// The worker is held at its stub now; the answer needs it running.
	if got := p.query("x"); !strings.HasPrefix(got, "value=1 ") {
		t.Fatalf("during the refused apply: %q", got)
	}
	select {
	case err := <-exited:
		t.Fatalf("apply ended (%v) before the answer was checked: the held thread ran only once it was let go at the deadline", err)
	default:
	}
}
