package e2e

import (
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// apply --all patches every process running the target, reports the one
// that runs other code, and undo --all takes the update out of all. The
// target binary has a name no other test uses, so --all only ever reaches
// processes this test started.
func TestFleetApplyAll(t *testing.T) {
	slow(t)
	work, upd := fleetCase(t, "fleet", map[string]string{"src": "src", "run": "src", "other": "other"}, "fix.patch", "fleet-e2e-fix")

	var ps []*prog
	for i := 0; i < 3; i++ {
		ps = append(ps, start(t, filepath.Join(work, "run"), "./fleet_e2e_target"))
	}
	odd := start(t, filepath.Join(work, "other"), "./fleet_e2e_target")
	for _, p := range append(ps, odd) {
		p.query("x") // running
	}

	r := run(t, "apply", "--all", upd)
	if r.exit != 1 || strings.TrimSpace(r.stdout) != "patched 3, skipped 0, failed 1" {
		t.Fatalf("apply --all: exit %d, stdout %q, stderr %q", r.exit, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, fmt.Sprintf("pid %s: failed", odd.pid())) || !strings.Contains(r.stderr, "fee") {
		t.Fatalf("apply --all: the mismatched process is not named with its function: %q", r.stderr)
	}
	for _, p := range ps {
		if got := p.query("x"); got != "fee=38" {
			t.Fatalf("pid %s after apply --all: %q", p.pid(), got)
		}
	}
	if got := odd.query("x"); got != "fee=47" {
		t.Fatalf("other release changed: %q", got)
	}

	r = mustRun(t, "show", "--all", "--json")
	var shown []struct {
		Pid     int `json:"pid"`
		Updates []struct {
			ID      string `json:"id"`
			Running string `json:"running"`
		} `json:"updates"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &shown); err != nil {
		t.Fatalf("show --all --json: %v: %s", err, r.stdout)
	}
	var got, want []string
	for _, s := range shown {
		for _, u := range s.Updates {
			if u.ID == "fleet-e2e-fix" && u.Running == "new" {
				got = append(got, fmt.Sprint(s.Pid))
			}
		}
	}
	for _, p := range ps {
		want = append(want, p.pid())
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("show --all: patched pids %v, want %v", got, want)
	}

	r = mustRun(t, "undo", "--all", "fleet-e2e-fix")
	if strings.TrimSpace(r.stdout) != "unpatched 3, skipped 0, failed 0" {
		t.Fatalf("undo --all: %q", r.stdout)
	}
	for _, p := range ps {
		if got := p.query("x"); got != "fee=37" {
			t.Fatalf("pid %s after undo --all: %q", p.pid(), got)
		}
	}
}

// apply --all finds a process by the build-id of its mapped file: the
// program runs in its own mount namespace, under another name, from a
// tmpfs that only that namespace sees. At the same path the host has a
// decoy (the ordinary build, which is no target), so reading the target's
// path on the host would find the wrong file: livesplice must read the
// mapped file itself (/proc/PID/map_files).
func TestFleetMountNamespace(t *testing.T) {
	slow(t)
	if os.Getuid() != 0 {
		t.Skip("needs root: mount namespaces and ptrace")
	}
	caseDir, _ := filepath.Abs("testdata/fleet_ns")
	work := t.TempDir()
	src := filepath.Join(work, "src")
	image := filepath.Join(work, "image")
	mnt := filepath.Join(work, "mnt")
	sh(t, work, "mkdir src image mnt plain")
	copyTree(t, filepath.Join(caseDir, "src"), src)
	copyTree(t, filepath.Join(caseDir, "src"), filepath.Join(work, "plain"))
	// The running program is the pre build itself (kept by create
	// --keep-work), as when the build that made the update is the one
	// deployed: it has the pre build-id. It runs under another name.
	sh(t, filepath.Join(work, "plain"), "make -s && cp ns_e2e_target ../mnt/svc")
	upd := filepath.Join(work, "fix.lsu")
	r := mustRun(t, "create", "--keep-work", "--src", src, "--id", "fleet-ns-e2e-fix", "-o", upd, filepath.Join(caseDir, "fix.patch"))
	_, kept, ok := strings.Cut(strings.TrimSpace(r.stderr), "keeping build trees in ")
	if !ok || !strings.HasPrefix(kept, "/") {
		t.Fatalf("create --keep-work: no build trees named: %q", r.stderr)
	}
	t.Cleanup(func() { os.RemoveAll(kept) })
	sh(t, work, fmt.Sprintf("cp %s/pre/ns_e2e_target image/svc", kept))
	var info struct {
		Targets []struct {
			PreBuildID string `json:"pre_build_id"`
		} `json:"targets"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, "info", "--json", upd).stdout), &info); err != nil || len(info.Targets) != 1 {
		t.Fatalf("info --json: %v %+v", err, info)
	}
	if got := buildID(t, filepath.Join(image, "svc")); got != info.Targets[0].PreBuildID {
		t.Fatalf("the running build's build-id %s is not the pre build's %s: the test cannot show discovery by build-id", got, info.Targets[0].PreBuildID)
	}

	script := fmt.Sprintf("mount -t tmpfs ns-e2e %s && cp %s/svc %s/svc && exec %s/svc", mnt, image, mnt, mnt)
	inNS := start(t, work, "unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	decoy := start(t, work, filepath.Join(mnt, "svc"))
	for _, p := range []*prog{inNS, decoy} {
		if got := p.query("x"); got != "fee=37" {
			t.Fatalf("pid %s before apply: %q", p.pid(), got)
		}
	}
	mine, _ := os.Readlink("/proc/self/ns/mnt")
	if theirs := readlink(t, inNS.pid()+"/ns/mnt"); theirs == mine {
		t.Fatalf("process %s shares the test's mount namespace %s", inNS.pid(), mine)
	}

	r = run(t, "apply", "--all", upd)
	if r.exit != 0 || strings.TrimSpace(r.stdout) != "patched 1, skipped 0, failed 0" {
		t.Fatalf("apply --all: exit %d, stdout %q, stderr %q", r.exit, r.stdout, r.stderr)
	}
	if got := inNS.query("x"); got != "fee=38" {
		t.Fatalf("process in its own mount namespace after apply --all: %q", got)
	}
	if got := decoy.query("x"); got != "fee=37" {
		t.Fatalf("the decoy (no target) changed: %q", got)
	}
	r = mustRun(t, "undo", "--all", "fleet-ns-e2e-fix")
	if strings.TrimSpace(r.stdout) != "unpatched 1, skipped 0, failed 0" {
		t.Fatalf("undo --all: %q", r.stdout)
	}
	if got := inNS.query("x"); got != "fee=37" {
		t.Fatalf("after undo --all: %q", got)
	}
}

// buildID reads the GNU build-id note of an ELF file.
func buildID(t testing.TB, path string) string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := f.Section(".note.gnu.build-id")
	if s == nil {
		t.Fatalf("%s has no build-id", path)
	}
	data, err := s.Data()
	if err != nil || len(data) < 16 {
		t.Fatalf("%s: build-id note: %v", path, err)
	}
	return hex.EncodeToString(data[16:])
}

// readlink reads a link under /proc (e.g. "123/ns/mnt").
func readlink(t testing.TB, rel string) string {
	t.Helper()
	s, err := os.Readlink("/proc/" + rel)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
