package agent

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"livesplice/internal/kernel"
	"livesplice/internal/repo"
	"livesplice/internal/target"
	"livesplice/internal/update"
)

// fakeKernel stands for the running kernel: the agent's ordering,
// idempotence and failure handling, without a kernel to patch (the real
// one is tested in QEMU by internal/kernel's tests).
type fakeKernel struct {
	release string
	applied []string
	fail    string
	undone  []string
}

func (k *fakeKernel) String() string           { return "the kernel" }
func (k *fakeKernel) Kind() string             { return update.KindKernel }
func (k *fakeKernel) Release() (string, error) { return k.release, nil }
func (k *fakeKernel) Apply(f *update.File, o target.Options) error {
	if err := target.CheckKind(k, f); err != nil {
		return err
	}
	if f.ID == k.fail {
		return kernel.ErrBusy
	}
	if slices.Contains(k.applied, f.ID) {
		return kernel.ErrApplied
	}
	k.applied = append(k.applied, f.ID)
	return nil
}

func (k *fakeKernel) Undo(id string, o target.Options) error {
	i := slices.Index(k.applied, id)
	if i < 0 {
		return kernel.ErrNotApplied
	}
	if i != len(k.applied)-1 {
		return kernel.ErrDependent
	}
	k.applied = k.applied[:i]
	k.undone = append(k.undone, id)
	return nil
}

func (k *fakeKernel) Applied() ([]target.Applied, error) {
	var out []target.Applied
	for _, id := range k.applied {
		out = append(out, target.Applied{ID: id, Status: "enabled"})
	}
	return out, nil
}

func kernelUpdate(t *testing.T, dir, id, release string, requires ...string) string {
	t.Helper()
	f := &update.File{ID: id, Kind: update.KindKernel, Patch: strings.Repeat("0", 64), Requires: requires,
		Kernel:  &update.Kernel{Release: release, ModuleName: "livesplice_" + strings.ReplaceAll(id, "-", "_"), Module: []byte("\x7fELF")},
		Targets: []update.Target{{Path: "vmlinux"}}}
	data, err := update.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, id+".lsu")
	os.WriteFile(p, data, 0o644)
	return p
}

func TestKernelTarget(t *testing.T) {
	k := &fakeKernel{release: "6.1.0-test"}
	defer func(old kernelTarget) { runningKernel = old }(runningKernel)
	runningKernel = k
	dir, url := newRepo(t)
	tmp := t.TempDir()
	files := []string{
		kernelUpdate(t, tmp, "k-fix1", "6.1.0-test"),
		kernelUpdate(t, tmp, "k-fix2", "6.1.0-test", "k-fix1"),
		kernelUpdate(t, tmp, "k-other", "5.10.0-other"),
	}
	if err := repo.Add(dir, files, nil, repo.Options{}); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	o := Options{Repo: url, Trust: filepath.Join(dir, repo.RootFile), State: state, Kernel: true, NoProcesses: true, Retries: 1}
	k.fail = "k-fix1"
	rep, err := Upgrade(o)
	if err != nil || rep.Err() == nil || len(k.applied) != 0 {
		t.Fatalf("failing apply: %+v %v, applied %v", rep, err, k.applied)
	}
	if s, _ := rep.Summary(); s != "stream version 2: applied 0, already applied 0, failed 2" || !strings.Contains(rep.Outcomes[1].Reason, "requires k-fix1, which failed") {
		t.Fatalf("failing apply: %s %+v", s, rep.Outcomes)
	}
	k.fail = ""
	rep, err = Upgrade(o)
	if err != nil || rep.Err() != nil || strings.Join(k.applied, ",") != "k-fix1,k-fix2" {
		t.Fatalf("upgrade: %+v %v, applied %v", rep, err, k.applied)
	}
	// Offline, from the cache: nothing left to do.
	o.Offline = true
	rep, err = Upgrade(o)
	if s, _ := rep.Summary(); err != nil || s != "stream version 2: applied 0, already applied 2, failed 0" {
		t.Fatalf("again: %s %v", s, err)
	}
	if _, err := os.Stat(filepath.Join(state, "updates", "k-other.lsu")); err == nil {
		t.Fatal("an update for another kernel release was cached")
	}
	rec, _ := (&stateDir{dir: state}).read()
	if tr := rec.Targets["kernel@6.1.0-test"]; tr == nil || strings.Join(tr.Updates, ",") != "k-fix1,k-fix2" {
		t.Fatalf("kernel record: %+v", rec.Targets)
	}

	// After a reboot (nothing applied), offline: a cached file changed since
	// it was verified is refused, and so is what requires it; the intact
	// one before it is applied.
	k.applied = nil
	cached := filepath.Join(state, "updates", "k-fix2.lsu")
	data, err := os.ReadFile(cached)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-1] ^= 1
	if err := os.WriteFile(cached, data, 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err = Upgrade(o)
	if err != nil || strings.Join(k.applied, ",") != "k-fix1" {
		t.Fatalf("offline with a changed cached file: %+v %v, applied %v", rep, err, k.applied)
	}
	if s, _ := rep.Summary(); s != "stream version 2: applied 1, already applied 0, failed 1" ||
		!errors.Is(rep.Err(), ErrVerify) || !strings.Contains(rep.Outcomes[1].Reason, "changed since it was verified") {
		t.Fatalf("offline with a changed cached file: %s %v %+v", s, rep.Err(), rep.Outcomes)
	}
}

// An update revoked from the stream (removed by the publisher) is undone in
// the kernel by the next upgrade --kernel, before the ones it was built on
// (which stay: they are still published), and the kernel record says so.
func TestKernelRevoked(t *testing.T) {
	k := &fakeKernel{release: "6.1.0-test"}
	defer func(old kernelTarget) { runningKernel = old }(runningKernel)
	runningKernel = k
	dir, url := newRepo(t)
	tmp := t.TempDir()
	files := []string{
		kernelUpdate(t, tmp, "k-fix1", "6.1.0-test"),
		kernelUpdate(t, tmp, "k-fix2", "6.1.0-test", "k-fix1"),
	}
	if err := repo.Add(dir, files, nil, repo.Options{}); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	o := Options{Repo: url, Trust: filepath.Join(dir, repo.RootFile), State: state, Kernel: true, NoProcesses: true, Retries: 1}
	if rep, err := Upgrade(o); err != nil || rep.Err() != nil || strings.Join(k.applied, ",") != "k-fix1,k-fix2" {
		t.Fatalf("upgrade: %+v %v, applied %v", rep, err, k.applied)
	}
	if err := repo.Remove(dir, []string{"k-fix2"}, repo.Options{}); err != nil {
		t.Fatal(err)
	}
	rep, err := Upgrade(o)
	if err != nil || rep.Err() != nil || strings.Join(k.applied, ",") != "k-fix1" || strings.Join(k.undone, ",") != "k-fix2" {
		t.Fatalf("upgrade after revocation: %+v %v, applied %v, undone %v", rep, err, k.applied, k.undone)
	}
	if s, _ := rep.Summary(); len(rep.Outcomes) != 2 || rep.Outcomes[0].ID != "k-fix2" || rep.Outcomes[0].Result != "undone" ||
		rep.Outcomes[1].ID != "k-fix1" || rep.Outcomes[1].Result != "already" || !strings.Contains(s, "undone 1") {
		t.Fatalf("outcomes: %+v", rep.Outcomes)
	}
	rec, _ := (&stateDir{dir: state}).read()
	if tr := rec.Targets["kernel@6.1.0-test"]; tr == nil || strings.Join(tr.Updates, ",") != "k-fix1" {
		t.Fatalf("kernel record after revocation: %+v", rec.Targets["kernel@6.1.0-test"])
	}
	// Nothing left to undo: a third run changes nothing.
	if rep, err := Upgrade(o); err != nil || rep.Err() != nil || len(k.undone) != 1 {
		t.Fatalf("third run: %+v %v, undone %v", rep, err, k.undone)
	}
}
