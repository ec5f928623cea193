package e2e

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCases runs every data-driven case under testdata/ (a directory with
// a case.json).
func TestCases(t *testing.T) {
	dirs, _ := filepath.Glob("testdata/*/case.json")
	if len(dirs) == 0 {
		t.Fatal("no cases found")
	}
	for _, d := range dirs {
		name := filepath.Base(filepath.Dir(d))
		t.Run(name, func(t *testing.T) {
			if os.Getuid() != 0 {
				t.Skip("needs root or ptrace of own processes")
			}
			if testing.Short() && !shortCases[name] {
				t.Skip("-short: make check runs one case of each mechanism (make test runs them all)")
			}
			runCase(t, name, "")
		})
	}
}

// TestMatrix runs some cases again with other compiler options: no
// optimisation, -O3, and a non-PIE executable (absolute addresses in code
// and jump tables).
func TestMatrix(t *testing.T) {
	slow(t)
	variants := []struct{ name, build string }{
		{"O0", "CFLAGS='-O0 -g'"},
		{"O3", "CFLAGS='-O3 -g'"},
		{"nopie", "CFLAGS='-O2 -g -fno-pie' LDFLAGS=-no-pie"},
	}
	for _, name := range []string{"basic", "static_local", "switch", "tls", "shadow_hooks", "hidden"} {
		for _, v := range variants {
			t.Run(name+"/"+v.name, func(t *testing.T) {
				if os.Getuid() != 0 {
					t.Skip("needs root or ptrace of own processes")
				}
				runCase(t, name, v.build)
			})
		}
	}
}
