package e2e

import (
	"encoding/json"
	"fmt"
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
	caseDir, _ := filepath.Abs("testdata/fleet")
	work := t.TempDir()
	sh(t, work, "mkdir src run other")
	copyTree(t, filepath.Join(caseDir, "src"), filepath.Join(work, "src"))
	copyTree(t, filepath.Join(caseDir, "src"), filepath.Join(work, "run"))
	copyTree(t, filepath.Join(caseDir, "other"), filepath.Join(work, "other"))
	sh(t, filepath.Join(work, "run"), "make -s")
	sh(t, filepath.Join(work, "other"), "make -s")
	upd := filepath.Join(work, "fix.lsu")
	// An id no other test uses: undo --all reaches every process holding it.
	mustRun(t, "create", "--src", filepath.Join(work, "src"), "--id", "fleet-e2e-fix", "-o", upd, filepath.Join(caseDir, "fix.patch"))

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
