package objdiff

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// FuzzLoadObject: no object file, however damaged, makes the differ panic.
func FuzzLoadObject(f *testing.F) {
	dir := f.TempDir()
	src := filepath.Join(dir, "x.c")
	os.WriteFile(src, []byte(`static int n; const char *s(void){return "x";} int g(int x){n++; switch(x){case 0:return 3;case 1:return 5;case 2:return 7;case 3:return 9;default:return n;}}`), 0o644)
	obj := filepath.Join(dir, "x.o")
	if out, err := exec.Command("gcc", "-O2", "-ffunction-sections", "-fdata-sections", "-c", src, "-o", obj).CombinedOutput(); err != nil {
		f.Fatalf("gcc: %v %s", err, out)
	}
	seed, _ := os.ReadFile(obj)
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		b := NewBuilder("prog", "", "")
		b.AddObject("x.o", seed, data)
		b.AddObject("x.o", data, seed)
	})
}
