package kernel

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
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
	writeFile(t, filepath.Join(h.Proc, "43/task/43/patch_state"), "1\n")
	writeFile(t, filepath.Join(h.Proc, "43/task/43/comm"), "done\n")
	err := h.waitTransition("lp", 1100*time.Millisecond, true)
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "42(stuck)") || strings.Contains(err.Error(), "done") {
		t.Fatalf("err = %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(p, "signal")); string(b) != "1" {
		t.Errorf("stragglers not signalled: signal = %q", b)
	}
}

func TestWaitTransitionDone(t *testing.T) {
	h := fakeHost(t)
	writeFile(t, filepath.Join(h.patchDir("lp"), "transition"), "0\n")
	if err := h.waitTransition("lp", time.Second, true); err != nil {
		t.Fatal(err)
	}
	// Unpatching: the patch directory goes away when the patch is freed.
	if err := h.waitTransition("gone", time.Second, false); err != nil {
		t.Fatal(err)
	}
	if err := h.waitTransition("gone", time.Second, true); err == nil {
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
