package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Another livesplice holds the process past the deadline: exit 4, and
// nothing changed. (The lock is the one livesplice takes, held here.)
func TestRefuseLockedPastDeadline(t *testing.T) {
	p, upd := prepare(t, "basic")
	os.MkdirAll("/run/livesplice", 0o1777)
	f, err := os.OpenFile(fmt.Sprintf("/run/livesplice/%s.lock", p.pid()), os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Skipf("cannot make the lock file: %v", err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	r := run(t, "apply", "--deadline", "300ms", "--pid", p.pid(), upd)
	if r.exit != 4 || !strings.Contains(r.stderr, "another livesplice is working on the process") {
		t.Fatalf("apply while locked: exit %d: %s", r.exit, r.stderr)
	}
	if got := p.query("12"); got != "price=120" {
		t.Fatalf("after refused apply: %q", got)
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	mustRun(t, "apply", "--pid", p.pid(), upd)
	if got := p.query("12"); got != "price=108" {
		t.Fatalf("after apply: %q", got)
	}
}

// Something else rewrote a patched entry: undo refuses and changes nothing.
func TestRefuseUndoOfTamperedEntry(t *testing.T) {
	p, upd := prepare(t, "basic")
	mustRun(t, "apply", "--pid", p.pid(), upd)
	var sj struct {
		Updates []struct {
			Funcs []struct {
				Addr  uint64 `json:"addr"`
				Saved []byte `json:"saved"`
				Jump  []byte `json:"jump"`
			} `json:"funcs"`
		} `json:"updates"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, "show", "--pid", p.pid(), "--json").stdout), &sj); err != nil || len(sj.Updates) != 1 {
		t.Fatalf("show: %v %+v", err, sj)
	}
	fn := sj.Updates[0].Funcs[0]
	// The entry jump with its displacement off by one byte: still a jump,
	// just not ours (the test started this process and writes only here).
	other := append([]byte{}, fn.Jump...)
	other[1]++
	mem, err := os.OpenFile(fmt.Sprintf("/proc/%s/mem", p.pid()), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	r := func() result {
		// Write it back before the program runs the function again.
		if _, err := mem.WriteAt(other, int64(fn.Addr)); err != nil {
			t.Fatal(err)
		}
		defer mem.WriteAt(fn.Jump, int64(fn.Addr))
		return run(t, "undo", "--pid", p.pid(), "fix")
	}()
	if r.exit != 1 || !strings.Contains(r.stderr, "was changed by something else; nothing was changed") {
		t.Fatalf("undo of a tampered entry: exit %d: %s", r.exit, r.stderr)
	}
	if got := p.query("12"); got != "price=108" {
		t.Fatalf("after refused undo: %q", got)
	}
	mustRun(t, "undo", "--pid", p.pid(), "fix")
	if got := p.query("12"); got != "price=120" {
		t.Fatalf("after undo: %q", got)
	}
}
