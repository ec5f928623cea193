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
			runCase(t, name, "")
		})
	}
}
