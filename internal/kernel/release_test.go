package kernel

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"livesplice/internal/update"
)

func kernelUpdate(release string) *update.File {
	return &update.File{ID: "fix", Kind: update.KindKernel,
		Kernel: &update.Kernel{Release: release, ModuleName: "livesplice_fix", Module: []byte("not loaded")}}
}

func TestCheckRelease(t *testing.T) {
	for _, c := range []struct {
		built, running string
		ok             bool
	}{
		{"6.1.0-18-amd64", "6.1.0-18-amd64", true},
		{"6.1.0-18-amd64", "6.1.0-17-amd64", false},       // another ABI of the same version
		{"6.1.0-18-amd64", "6.1.0-18-cloud-amd64", false}, // another flavour
		{"6.1.0-18-amd64", "6.1.0-18-amd64 ", false},      // no lenient comparison
		{"6.1.0-18-amd64", "", false},
	} {
		err := checkRelease(kernelUpdate(c.built), c.running)
		if c.ok != (err == nil) || (err != nil && (!errors.Is(err, ErrWrongKernel) ||
			!strings.Contains(err.Error(), "built for kernel "+c.built))) {
			t.Errorf("checkRelease(built for %q, running %q) = %v", c.built, c.running, err)
		}
	}
	if err := checkRelease(&update.File{ID: "p", Kind: update.KindProcess}, "6.1.0-18-amd64"); !errors.Is(err, ErrWrongKernel) {
		t.Errorf("an update with no kernel part: %v", err)
	}
}

// Apply refuses an update built for another release before it takes the
// lock or writes a record: the host's directories stay as they were.
func TestApplyWrongRelease(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("Apply checks for root before the release") // the refusal itself is TestCheckRelease
	}
	rel, err := Release()
	if err != nil {
		t.Fatal(err)
	}
	h := fakeHost(t)
	err = h.Apply(kernelUpdate(rel+"-other"), Options{})
	if !errors.Is(err, ErrWrongKernel) || !strings.Contains(err.Error(), "this one runs "+rel) {
		t.Fatalf("Apply of an update for another release: %v", err)
	}
	for _, d := range []string{h.Run, h.Proc, h.Sys} {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was created by a refused apply (%v)", d, err)
		}
	}
}

// Two ids that differ only in '.', '-' or '_' name one livepatch module:
// the second is refused naming the update that holds the module.
func TestApplyModuleNameTaken(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("Apply checks for root first")
	}
	rel, err := Release()
	if err != nil {
		t.Fatal(err)
	}
	h := fakeHost(t)
	if err := h.writeRecord(record{ID: "a.b", Module: "livesplice_a_b", Release: rel}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(h.patchDir("livesplice_a_b"), "enabled"), "1\n")
	f := kernelUpdate(rel)
	f.ID, f.Kernel.ModuleName = "a-b", "livesplice_a_b"
	err = h.Apply(f, Options{})
	if !errors.Is(err, ErrApplied) || !strings.Contains(err.Error(), "already loaded for update a.b") || !strings.Contains(err.Error(), "another --id") {
		t.Fatalf("Apply of a-b while a.b holds livesplice_a_b: %v", err)
	}
}
