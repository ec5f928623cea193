package elfsym

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestBoundHere: a hidden function is global in its object and local in
// the linked library (in ld's own scope, after an empty STT_FILE); it is
// found there, once, while a static of another file and an exported
// function are not "bound here".
func TestBoundHere(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.c"), []byte("__attribute__((visibility(\"hidden\"), noinline)) int helper(int x){return x*3;}\nstatic __attribute__((noinline)) int st(int x){return x+1;}\nint api(int x){return helper(x)+st(x);}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "b.c"), []byte("static __attribute__((noinline)) int st(int x){return x+2;}\nint api2(int x){return st(x);}\n"), 0o644)
	out := filepath.Join(dir, "lib.so")
	cmd := exec.Command("gcc", "-O2", "-fPIC", "-shared", "-o", out, "a.c", "b.c")
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v %s", err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := Load(f)
	if err != nil {
		t.Fatal(err)
	}
	if g := tab.Global("helper"); len(g) != 0 {
		t.Fatalf("helper is global in the linked file: %v", g)
	}
	if h := tab.BoundHere("helper", ""); len(h) != 1 || h[0].Size == 0 {
		t.Errorf("BoundHere(helper) = %v, want the one demoted local", h)
	}
	if h := tab.Demoted("helper"); len(h) != 1 {
		t.Errorf("Demoted(helper) = %v, want the one demoted local", h)
	}
	if h := tab.Demoted("st"); h != nil {
		t.Errorf("Demoted(st) = %v, want nil (statics of source files)", h)
	}
	if h := tab.Local("", "helper"); len(h) != 1 {
		t.Errorf("Local(\"\", helper) = %v, want it once", h)
	}
	if h := tab.BoundHere("api", ""); h != nil {
		t.Errorf("BoundHere(api) = %v, want nil (it is global)", h)
	}
	if h := tab.BoundHere("st", "b.c"); len(h) != 1 {
		t.Errorf("BoundHere(st, b.c) = %v, want b.c's static", h)
	}
	if h := tab.BoundHere("st", ""); h != nil {
		t.Errorf("BoundHere(st) = %v, want nil (two statics, no file)", h)
	}
}
