package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	faultOnce   sync.Once
	faultBinary string // livesplice built with -tags faultinject
	faultErr    error
)

func faultLivesplice(t *testing.T) string {
	t.Helper()
	faultOnce.Do(func() {
		faultBinary = filepath.Join(filepath.Dir(livesplice), "livesplice-fault")
		out, err := exec.Command("go", "build", "-tags", "faultinject", "-o", faultBinary, "../cmd/livesplice").CombinedOutput()
		if err != nil {
			faultErr = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if faultErr != nil {
		t.Fatalf("build fault-injection livesplice: %v", faultErr)
	}
	return faultBinary
}

const crashOld, crashNew = "v=1026", "v=2040"

// crashState checks the invariants after livesplice died: the program is
// alive, no call ever saw a half-applied update, and show tells the truth
// about what runs. It returns whether the new code runs.
func crashState(t *testing.T, p *prog, when string) bool {
	t.Helper()
	got := p.query("q")
	if !strings.Contains(got, "mix=0 ") {
		t.Fatalf("%s: a call saw a half-applied update: %s", when, got)
	}
	isNew := strings.HasPrefix(got, crashNew)
	if !isNew && !strings.HasPrefix(got, crashOld) {
		t.Fatalf("%s: unexpected answer %q", when, got)
	}
	r := mustRun(t, "show", "--pid", p.pid(), "--json")
	var sj struct {
		Updates []struct {
			ID      string `json:"id"`
			Running string `json:"running"`
		} `json:"updates"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &sj); err != nil {
		t.Fatalf("%s: show --json: %v", when, err)
	}
	shownNew := len(sj.Updates) == 1 && sj.Updates[0].Running == "new"
	if len(sj.Updates) > 1 || shownNew != isNew {
		t.Fatalf("%s: show says %s, but the program answers %q", when, r.stdout, got)
	}
	return isNew
}

// settle brings the program back to "not applied" with ordinary commands
// (which first finish or roll back what was interrupted), checking that
// they work.
func settle(t *testing.T, p *prog, upd, when string) {
	t.Helper()
	r := run(t, "apply", "--pid", p.pid(), upd)
	if r.exit != 0 && r.exit != 6 {
		t.Fatalf("%s: follow-up apply: exit %d: %s", when, r.exit, r.stderr)
	}
	if got := p.query("q"); !strings.HasPrefix(got, crashNew) {
		t.Fatalf("%s: after follow-up apply: %q", when, got)
	}
	mustRun(t, "undo", "--pid", p.pid(), "fix")
	if got := p.query("q"); !strings.HasPrefix(got, crashOld) || !strings.Contains(got, "mix=0 ") {
		t.Fatalf("%s: after follow-up undo: %q", when, got)
	}
}

// killedAt runs the fault-injection livesplice, which must die at point.
func killedAt(t *testing.T, point string, args ...string) {
	t.Helper()
	cmd := exec.Command(faultLivesplice(t), args...)
	cmd.Env = append(os.Environ(), "LIVESPLICE_FAULT="+point)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("livesplice did not die at %s: %v: %s", point, err, out)
	}
}

// Every named point between attach and detach, in apply and in undo.
func TestCrashAtEveryPoint(t *testing.T) {
	slow(t)
	p, upd := prepare(t, "crash")
	// ptrace:syscall: killed with an injected system call armed on the
	// thread blocked in read(): it must run the call, restore itself and
	// restart its read.
	applyPoints := []string{"ptrace:syscall", "ptrace:syscalls", "apply:attached", "apply:prepared", "apply:stopped",
		"apply:committing:1", "apply:committing", "apply:entry:1", "apply:entry:2", "apply:entry:3", "apply:entry",
		"apply:flipped", "apply:recorded:1", "apply:recorded"}
	for _, pt := range applyPoints {
		killedAt(t, pt, "apply", "--pid", p.pid(), upd)
		crashState(t, p, pt)
		settle(t, p, upd, pt)
	}
	undoPoints := []string{"undo:attached", "undo:stopped", "undo:undoing:1", "undo:undoing",
		"undo:flipped", "undo:entry:1", "undo:entry:2", "undo:entry", "undo:unmapped", "undo:recorded"}
	for _, pt := range undoPoints {
		mustRun(t, "apply", "--pid", p.pid(), upd)
		killedAt(t, pt, "undo", "--pid", p.pid(), "fix")
		crashState(t, p, pt)
		settle(t, p, upd, pt)
	}
	// A recovery that is itself killed is recovered again.
	for _, pt := range []string{"recover:stopped", "recover:undoing", "recover:flipped", "recover:entry:1", "recover:unmapped"} {
		killedAt(t, "apply:entry:2", "apply", "--pid", p.pid(), upd)
		killedAt(t, pt, "apply", "--pid", p.pid(), upd)
		crashState(t, p, pt)
		settle(t, p, upd, pt)
	}
	crashAtRedirects(t)
}

// crashAtRedirects kills livesplice at every step of sending busy
// threads' returns through stubs (process/retstub.go), on a program whose
// thread is always inside the replaced function: the stub region made,
// a stub's target written, the return slot written, the threads let run,
// the threads held at their stubs. Each time the program goes on, its
// thread leaves through the stub with no livesplice to catch it, show
// tells the truth, and ordinary apply and undo work.
func crashAtRedirects(t *testing.T) {
	p, upd := prepare(t, "sleeper")
	check := func(when string) bool {
		t.Helper()
		got := p.query("q")
		isNew := strings.HasPrefix(got, "value=2 ")
		if !isNew && !strings.HasPrefix(got, "value=1 ") {
			t.Fatalf("%s: unexpected answer %q", when, got)
		}
		r := mustRun(t, "show", "--pid", p.pid(), "--json")
		shownNew := strings.Contains(r.stdout, `"running": "new"`)
		if shownNew != isNew {
			t.Fatalf("%s: show says %s, but the program answers %q", when, r.stdout, got)
		}
		return isNew
	}
	settleSleeper := func(when string) {
		t.Helper()
		r := run(t, "apply", "--pid", p.pid(), upd)
		if r.exit != 0 && r.exit != 6 {
			t.Fatalf("%s: follow-up apply: exit %d: %s", when, r.exit, r.stderr)
		}
		if !check(when + ", follow-up apply") {
			t.Fatalf("%s: follow-up apply left the old code running", when)
		}
		mustRun(t, "undo", "--pid", p.pid(), "fix")
		if check(when + ", follow-up undo") {
			t.Fatalf("%s: follow-up undo left the new code running", when)
		}
	}
	points := []string{"safety:stubs-mapped", "safety:redirect:1", "safety:redirect:2", "safety:redirected", "safety:held"}
	for _, pt := range points {
		killedAt(t, pt, "apply", "--pid", p.pid(), upd)
		check("apply " + pt)
		settleSleeper("apply " + pt)
	}
	for _, pt := range points[1:] {
		mustRun(t, "apply", "--pid", p.pid(), upd)
		killedAt(t, pt, "undo", "--pid", p.pid(), "fix")
		check("undo " + pt)
		settleSleeper("undo " + pt)
	}
}

// SIGKILL at random instants of apply and undo.
func TestCrashAtRandomInstants(t *testing.T) {
	slow(t)
	p, upd := prepare(t, "crash")
	n := 120
	if testing.Short() {
		n = 20
	}
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < n; i++ {
		args := []string{"apply", "--pid", p.pid(), upd}
		if i%2 == 1 {
			mustRun(t, "apply", "--pid", p.pid(), upd)
			args = []string{"undo", "--pid", p.pid(), "fix"}
		}
		cmd := exec.Command(livesplice, args...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.Intn(40000)) * time.Microsecond)
		cmd.Process.Kill() // the livesplice this test started
		cmd.Wait()
		when := fmt.Sprintf("run %d (%s)", i, args[0])
		crashState(t, p, when)
		settle(t, p, upd, when)
	}
}

// A C++ program, whose unwinder (libgcc) is handed the update's call frame
// information: livesplice killed before, while and after it registers or
// deregisters the frames leaves a program that still throws and catches
// (through the old code or the new, never through freed frames), and the
// next commands recover and work.
func TestCrashAroundFrameRegistration(t *testing.T) {
	slow(t)
	p, upd := prepare(t, "cxx")
	check := func(when string) {
		t.Helper()
		if got := p.query("-1"); got != "error: negative" {
			t.Fatalf("%s: an exception through the program: %q", when, got)
		}
		switch got := p.query("500"); got {
		case "1000", "error: too large":
		default:
			t.Fatalf("%s: %q", when, got)
		}
	}
	settleCxx := func(when string) {
		t.Helper()
		mustRun(t, "apply", "--pid", p.pid(), upd)
		if got := p.query("500"); got != "error: too large" {
			t.Fatalf("%s: after the follow-up apply: %q", when, got)
		}
		mustRun(t, "undo", "--pid", p.pid(), "fix")
		if got := p.query("500"); got != "1000" {
			t.Fatalf("%s: after the follow-up undo: %q", when, got)
		}
		check(when + ", settled")
	}
	for _, pt := range []string{"apply:prepared", "frames:registering", "apply:frames", "apply:entry"} {
		killedAt(t, pt, "apply", "--pid", p.pid(), upd)
		check(pt)
		settleCxx(pt)
	}
	for _, pt := range []string{"frames:deregistering", "undo:unmapped"} {
		mustRun(t, "apply", "--pid", p.pid(), upd)
		killedAt(t, pt, "undo", "--pid", p.pid(), "fix")
		check(pt)
		settleCxx(pt)
	}
}
