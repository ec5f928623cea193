package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// prepareBuild is prepare with a make command line of its own (both the
// running program and the update's trees are built with it). The case's
// program and update id are its own (busy_sleeper_target,
// busy-sleeper-fix): apply --all and undo --all must reach no process of
// another test running meanwhile (go test runs packages in parallel).
func prepareBuild(t *testing.T, name, build string) (*prog, string) {
	t.Helper()
	caseDir, _ := filepath.Abs(filepath.Join("testdata", name))
	work := t.TempDir()
	src, runDir := filepath.Join(work, "src"), filepath.Join(work, "run")
	sh(t, work, "mkdir src run")
	copyTree(t, filepath.Join(caseDir, "src"), src)
	copyTree(t, src, runDir)
	sh(t, runDir, build)
	upd := filepath.Join(work, "fix.lsu")
	mustRun(t, "create", "--src", src, "--build", build, "--id", "busy-sleeper-fix", "-o", upd, filepath.Join(caseDir, "fix.patch"))
	return start(t, runDir, "./busy_sleeper_target"), upd
}

// A thread that prints and sleeps in nanosleep inside the replaced
// function, called in a loop, is inside it (mostly blocked in the system
// call) all the time: apply and undo catch it as it returns, every time.
// A short deadline: sampling alone would not find it outside.
func TestBusySleeper(t *testing.T) {
	for _, v := range []struct{ name, build string }{
		{"O2", "make busy_sleeper_target"},
		{"O0", "make CFLAGS='-O0 -g' busy_sleeper_target"},
	} {
		t.Run(v.name, func(t *testing.T) {
			p, upd := prepareBuild(t, "sleeper", v.build)
			if got := p.query("q"); !strings.HasPrefix(got, "value=1 ") {
				t.Fatalf("before: %q", got)
			}
			for i := 0; i < 5; i++ {
				mustRun(t, "apply", "--deadline", "3s", "--pid", p.pid(), upd)
				if got := p.query("q"); !strings.HasPrefix(got, "value=2 ") {
					t.Fatalf("round %d after apply: %q", i, got)
				}
				mustRun(t, "undo", "--deadline", "3s", "--pid", p.pid(), "busy-sleeper-fix")
				if got := p.query("q"); !strings.HasPrefix(got, "value=1 ") {
					t.Fatalf("round %d after undo: %q", i, got)
				}
			}
			// The fleet path (--all) waits the same way.
			r := mustRun(t, "apply", "--all", "--deadline", "3s", upd)
			if !strings.Contains(r.stdout, "patched 1,") {
				t.Fatalf("apply --all: %q %q", r.stdout, r.stderr)
			}
			if got := p.query("q"); !strings.HasPrefix(got, "value=2 ") {
				t.Fatalf("after apply --all: %q", got)
			}
			mustRun(t, "undo", "--all", "--deadline", "3s", "busy-sleeper-fix")
			if got := p.query("q"); !strings.HasPrefix(got, "value=1 ") {
				t.Fatalf("after undo --all: %q", got)
			}
		})
	}
}

// More threads than cores, each inside the replaced function almost all
// the time and leaving it often: apply and undo succeed every time, and
// no call returns anything but the old or the new value.
func TestBusyCrowd(t *testing.T) {
	slow(t)
	p, upd := prepare(t, "crowd")
	for i := 0; i < 10; i++ {
		mustRun(t, "apply", "--deadline", "3s", "--pid", p.pid(), upd)
		if got := p.query("q"); !strings.HasPrefix(got, "value=2 ") {
			t.Fatalf("round %d after apply: %q", i, got)
		}
		mustRun(t, "undo", "--deadline", "3s", "--pid", p.pid(), "fix")
		if got := p.query("q"); !strings.HasPrefix(got, "value=1 ") {
			t.Fatalf("round %d after undo: %q", i, got)
		}
	}
	if got := p.query("q"); !strings.HasSuffix(got, " wrong=0") {
		t.Fatalf("after 10 rounds: %s", got)
	}
}

// A C++ thread inside the replaced function leaves it by returning or by
// throwing, in turn. An exception thrown while its return is sent through
// a stub must reach the caller's catch (libgcc is handed the stubs' call
// frame information), both while livesplice waits and after a livesplice
// killed with the redirect in place.
func TestBusyThrowing(t *testing.T) {
	slow(t)
	p, upd := prepare(t, "cxx_sleeper")
	caught := func(when, value string) int {
		t.Helper()
		got := p.query("q")
		var v, c int
		if _, err := fmt.Sscanf(got, "value=%d caught=%d", &v, &c); err != nil || fmt.Sprint(v) != value {
			t.Fatalf("%s: %q (want value=%s)", when, got, value)
		}
		return c
	}
	last := caught("before", "1")
	for i := 0; i < 5; i++ {
		mustRun(t, "apply", "--deadline", "5s", "--pid", p.pid(), upd)
		caught(fmt.Sprintf("round %d after apply", i), "2")
		mustRun(t, "undo", "--deadline", "5s", "--pid", p.pid(), "fix")
		c := caught(fmt.Sprintf("round %d after undo", i), "1")
		if c <= last {
			t.Fatalf("round %d: no exception caught since (%d, %d before)", i, c, last)
		}
		last = c
	}
	// Killed with the return slot pointing at the stub and no tracer: the
	// thread's next exit from work, a return or an exception, goes
	// through the stub on its own.
	for _, pt := range []string{"safety:redirect:2", "safety:held"} {
		killedAt(t, pt, "apply", "--pid", p.pid(), upd)
		for k := 0; k < 3; k++ {
			c := caught(pt, "1")
			if c <= last {
				t.Fatalf("%s: no exception caught since (%d, %d before)", pt, c, last)
			}
			last = c
		}
	}
}
