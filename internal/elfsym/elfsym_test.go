package elfsym

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func build(t testing.TB, flags ...string) string {
	dir := t.TempDir()
	src := filepath.Join(dir, "p.c")
	os.WriteFile(src, []byte("static int helper(int x){return x+1;} int visible(int x){return helper(x)*2;} int main(void){return visible(1);}"), 0o644)
	out := filepath.Join(dir, "p")
	args := append([]string{"-O0", "-Wl,--build-id", "-o", out, src}, flags...)
	if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v %s", err, b)
	}
	return out
}

func TestLoad(t *testing.T) {
	f, err := os.Open(build(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := Load(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Local("p.c", "helper")) != 1 || len(tab.Local("other.c", "helper")) != 0 {
		t.Errorf("static helper by file: %v", tab.Local("p.c", "helper"))
	}
	if g := tab.Global("visible"); len(g) == 0 || g[0].Size == 0 {
		t.Errorf("global visible: %v", g)
	}
	if len(tab.BuildID) != 40 || tab.Stripped {
		t.Errorf("build-id %q stripped %v", tab.BuildID, tab.Stripped)
	}
}

func FuzzLoad(f *testing.F) {
	seed, err := os.ReadFile(build(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		Load(bytes.NewReader(data))
		BuildID(bytes.NewReader(data))
	})
}
