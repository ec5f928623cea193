package kernel

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"livesplice/internal/runpre"
	"livesplice/internal/update"
)

// fakeHost is a /proc, /sys and record directory in a temporary directory.
func fakeHost(t *testing.T) *Host {
	t.Helper()
	d := t.TempDir()
	return &Host{Proc: filepath.Join(d, "proc"), Sys: filepath.Join(d, "sys"), Run: filepath.Join(d, "run")}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A transition that never ends: the stragglers are signalled, then named.
func TestWaitTransitionTimesOut(t *testing.T) {
	h := fakeHost(t)
	p := h.patchDir("lp")
	writeFile(t, filepath.Join(p, "transition"), "1\n")
	writeFile(t, filepath.Join(p, "enabled"), "1\n")
	writeFile(t, filepath.Join(p, "signal"), "")
	writeFile(t, filepath.Join(h.Proc, "42/task/42/patch_state"), "0\n")
	writeFile(t, filepath.Join(h.Proc, "42/task/42/comm"), "stuck\n")
	writeFile(t, filepath.Join(h.Proc, "42/task/42/stack"), "[<0>] __schedule+0x2f6/0x880\n[<0>] schedule+0x5a/0xd0\n[<0>] schedule_timeout+0x94/0x150\n[<0>] msleep+0x2a/0x40\n[<0>] busymod_work_func+0x1f/0x30 [busymod]\n[<0>] process_one_work+0x1c7/0x380\n[<0>] worker_thread+0x4d/0x380\n")
	writeFile(t, filepath.Join(h.Proc, "43/task/43/patch_state"), "1\n")
	writeFile(t, filepath.Join(h.Proc, "43/task/43/comm"), "done\n")
	err := h.waitTransition("lp", 1100*time.Millisecond, true, Options{})
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "42(stuck) in msleep<busymod_work_func<process_one_work") || strings.Contains(err.Error(), "done") {
		t.Fatalf("err = %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(p, "signal")); string(b) != "1" {
		t.Errorf("stragglers not signalled: signal = %q", b)
	}
}

func TestWaitTransitionDone(t *testing.T) {
	h := fakeHost(t)
	writeFile(t, filepath.Join(h.patchDir("lp"), "transition"), "0\n")
	if err := h.waitTransition("lp", time.Second, true, Options{}); err != nil {
		t.Fatal(err)
	}
	// Unpatching: the patch directory goes away when the patch is freed.
	if err := h.waitTransition("gone", time.Second, false, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := h.waitTransition("gone", time.Second, true, Options{}); err == nil {
		t.Fatal("patching a livepatch that does not exist succeeded")
	}
}

func TestShow(t *testing.T) {
	h := fakeHost(t)
	for _, r := range []record{
		{ID: "b", Module: "livesplice_b", AppliedAt: "2026-01-01T00:00:02.000000000Z", Requires: []string{"a"},
			Funcs: []PatchedFunc{{Object: "vmlinux", Name: "f", New: "f"}}},
		{ID: "a", Module: "livesplice_a", AppliedAt: "2026-01-01T00:00:01.000000000Z"},
		{ID: "c", Module: "livesplice_c", AppliedAt: "2026-01-01T00:00:03.000000000Z"},
	} {
		if err := h.writeRecord(r); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(h.patchDir("livesplice_a"), "enabled"), "1\n")
	writeFile(t, filepath.Join(h.patchDir("livesplice_a"), "transition"), "0\n")
	writeFile(t, filepath.Join(h.patchDir("livesplice_b"), "enabled"), "1\n")
	writeFile(t, filepath.Join(h.patchDir("livesplice_b"), "transition"), "1\n")
	writeFile(t, filepath.Join(h.patchDir("livesplice_b"), "vmlinux", "f,1", "patched"), "1\n")
	shown, err := h.Show()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range shown {
		got = append(got, s.ID+":"+s.State)
	}
	if strings.Join(got, " ") != "a:enabled b:transition c:unloaded" {
		t.Errorf("Show = %v", got)
	}
	if fs := h.patchFuncs("livesplice_b"); len(fs) != 1 || fs[0] != (PatchedFunc{Object: "vmlinux", Name: "f", Sympos: 1}) {
		t.Errorf("patchFuncs = %+v", fs)
	}
	writeFile(t, filepath.Join(h.Run, "bad.json"), "{")
	if _, err := h.Show(); err == nil {
		t.Error("a corrupt record was accepted")
	}
}

func TestLock(t *testing.T) {
	h := fakeHost(t)
	unlock, err := h.lock()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.lock(); !errors.Is(err, ErrBusy) {
		t.Errorf("second lock: %v", err)
	}
	unlock()
	unlock2, err := h.lock()
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}

// syncBuf is a log another goroutine writes.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLockWaits: a second apply waits for the first (which holds the lock
// through its transition), saying what the transition waits for, and
// goes on once the first is done.
func TestLockWaits(t *testing.T) {
	h := fakeHost(t)
	p := h.patchDir("lp")
	writeFile(t, filepath.Join(p, "transition"), "1\n")
	writeFile(t, filepath.Join(p, "enabled"), "1\n")
	writeFile(t, filepath.Join(h.Proc, "42/task/42/patch_state"), "0\n")
	writeFile(t, filepath.Join(h.Proc, "42/task/42/comm"), "stuck\n")
	unlock, err := h.lock()
	if err != nil {
		t.Fatal(err)
	}
	var log syncBuf
	done := make(chan error, 1)
	go func() {
		u, err := h.lockWait(time.Hour, Options{Log: &log})
		if err == nil {
			u()
		}
		done <- err
	}()
	for !strings.Contains(log.String(), "waiting for another livesplice") {
		time.Sleep(10 * time.Millisecond)
	}
	if l := log.String(); !strings.Contains(l, "livepatch lp in transition, tasks not switched: 42(stuck)") {
		t.Errorf("the wait does not say what it waits for: %q", l)
	}
	unlock()
	if err := <-done; err != nil {
		t.Fatalf("lock after the first let go: %v", err)
	}
}

// Two statics of one name: only the module's sympos says which one is
// patched, and that one must match.
func TestMatchFuncSympos(t *testing.T) {
	const a1, a2 = 0xffffffff81100000, 0xffffffff81200000
	ks, err := ParseKallsyms(strings.NewReader("ffffffff81100000 t show_val\nffffffff81200000 t show_val\nffffffff81300000 T other\n"))
	if err != nil {
		t.Fatal(err)
	}
	mem, err := NewKcore(bytes.NewReader(coreFile(map[uint64][]byte{
		a1: {0x31, 0xc0, 0xc3, 0xcc}, // xor %eax,%eax; ret
		a2: {0xb0, 0x01, 0xc3, 0xcc}, // mov $1,%al; ret
	})))
	if err != nil {
		t.Fatal(err)
	}
	tg := &update.Target{Path: "vmlinux", Symbols: []update.Symbol{{Kind: update.SymLocal, Name: "show_val"}},
		Functions: []update.Function{{Name: "show_val", Status: update.StatusReplaced, Symbol: 0, Section: -1,
			Pre: &update.Code{Data: []byte{0xb0, 0x01, 0xc3}}}}}
	h := fakeHost(t)
	for sympos, want := range map[int]error{0: runpre.ErrAmbiguous, 1: runpre.ErrMismatch, 2: nil, 3: runpre.ErrNotFound} {
		m := &matcher{ks: ks, syms: tg.Symbols, known: map[int]uint64{}}
		addr, err := h.matchFunc(m, tg, tg.Functions[0], sympos, ks, mem, nil)
		if !errors.Is(err, want) || (want == nil && addr != a2) {
			t.Errorf("sympos %d: %#x, %v; want %v", sympos, addr, err, want)
		}
	}
}
