package agent

import (
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"livesplice/internal/repo"
	"livesplice/internal/server"
	"livesplice/internal/update"
)

// newRepo creates a repository and serves it; it returns the directory
// and the URL.
func newRepo(t *testing.T) (string, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	if err := repo.Init(dir, repo.Options{}); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(server.Handler(dir))
	t.Cleanup(ts.Close)
	return dir, ts.URL
}

func refresh(t *testing.T, url, trust, state string) (*Stream, error) {
	t.Helper()
	c := &client{url: url, trust: trust, state: &stateDir{dir: state}, retries: 1}
	unlock, err := c.state.lock()
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	return c.refresh()
}

func TestRefreshAndKeyRotation(t *testing.T) {
	dir, url := newRepo(t)
	pinned := filepath.Join(t.TempDir(), "root.json")
	data, _ := os.ReadFile(filepath.Join(dir, repo.RootFile))
	os.WriteFile(pinned, data, 0o644)
	state := t.TempDir()
	s, err := refresh(t, url, pinned, state)
	if err != nil || s.Version != 1 || len(s.Updates) != 0 {
		t.Fatalf("empty stream: %+v %v", s, err)
	}
	// Every key replaced: an agent pinned to the first root follows the
	// chain of roots, each signed by its predecessor's key.
	for _, role := range repo.Roles {
		if err := repo.RotateKey(dir, role, repo.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, st := range []string{state, t.TempDir()} {
		s, err = refresh(t, url, pinned, st)
		if err != nil || s.Version != 5 {
			t.Fatalf("after rotation: %+v %v", s, err)
		}
	}
	cached, _ := os.ReadFile(filepath.Join(state, "metadata", "root.json"))
	if !strings.Contains(string(cached), `"version": 5`) {
		t.Fatalf("the newest root is not kept: %s", cached)
	}
}

func TestRefusals(t *testing.T) {
	dir, url := newRepo(t)
	trust := filepath.Join(dir, repo.RootFile)
	pinned := filepath.Join(t.TempDir(), "root.json")
	data, _ := os.ReadFile(trust)
	os.WriteFile(pinned, data, 0o644)

	other, otherURL := newRepo(t)
	_ = other
	if _, err := refresh(t, otherURL, pinned, t.TempDir()); !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), "bad signature") {
		t.Fatalf("wrong key: %v", err)
	}

	state := t.TempDir()
	if _, err := refresh(t, url, pinned, state); err != nil {
		t.Fatal(err)
	}
	// Freeze: metadata re-signed long ago and never refreshed.
	old := filepath.Join(t.TempDir(), "old")
	os.CopyFS(old, os.DirFS(dir))
	past := func() time.Time { return time.Now().Add(-48 * time.Hour) }
	if err := repo.Refresh(dir, repo.Options{Now: past, TimestampExpiry: time.Hour, SnapshotExpiry: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := refresh(t, url, pinned, t.TempDir()); !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), "expired metadata") {
		t.Fatalf("expired: %v", err)
	}
	if err := repo.Refresh(dir, repo.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := refresh(t, url, pinned, state); err != nil {
		t.Fatal(err)
	}
	// Rollback: the older repository served to an agent that saw newer.
	ts := httptest.NewServer(server.Handler(old))
	defer ts.Close()
	if _, err := refresh(t, ts.URL, pinned, state); !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), "rollback refused") {
		t.Fatalf("rollback: %v", err)
	}
	// Unreachable: a fetch error, not a verification failure.
	if _, err := refresh(t, "http://127.0.0.1:1", pinned, t.TempDir()); !errors.Is(err, ErrFetch) || errors.Is(err, ErrVerify) {
		t.Fatalf("unreachable: %v", err)
	}
	if _, err := refresh(t, url, filepath.Join(t.TempDir(), "none.json"), t.TempDir()); err == nil || !strings.Contains(err.Error(), "trusted root") {
		t.Fatalf("no trusted root: %v", err)
	}
}

func TestOrdered(t *testing.T) {
	e := func(id string, req ...string) Cached {
		c := Cached{}
		c.ID, c.Requires = id, req
		return c
	}
	entries := map[string]Cached{"a": e("a"), "b": e("b", "a"), "c": e("c", "b"), "d": e("d", "missing"), "x": e("x", "y"), "y": e("y", "x")}
	plan, bad := ordered([]string{"c", "b"}, entries, map[string]bool{})
	if strings.Join(plan, ",") != "a,b,c" || len(bad) != 0 {
		t.Fatalf("plan %v bad %v", plan, bad)
	}
	plan, _ = ordered([]string{"c"}, entries, map[string]bool{"a": true})
	if strings.Join(plan, ",") != "b,c" {
		t.Fatalf("with a applied: %v", plan)
	}
	plan, bad = ordered([]string{"d", "x", "a"}, entries, map[string]bool{})
	if strings.Join(plan, ",") != "a" || len(bad) != 3 || !strings.Contains(bad[0][1], "missing") || !strings.Contains(bad[1][1], "cycle") || bad[2][0] != "y" {
		t.Fatalf("plan %v bad %v", plan, bad)
	}
}

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig([]byte("# comment\nrepo = http://updates.example/stream\n\nauto_install = no\ninstall_on_reboot=yes\n"))
	if err != nil || c.Repo != "http://updates.example/stream" || c.AutoInstall || !c.InstallOnReboot || c.Trust != DefaultTrust || c.State != DefaultState {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range []string{"repo http://x", "auto_install = maybe", "colour = blue", "state ="} {
		if _, err := ParseConfig([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if c, err := LoadConfig(filepath.Join(t.TempDir(), "none"), false); err != nil || c != DefaultSettings() {
		t.Fatalf("missing default config: %+v %v", c, err)
	}
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "none"), true); err == nil {
		t.Fatal("a missing named config was accepted")
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("repo = http://x\nauto_install = yes\n# c\n"))
	f.Add([]byte("state=/var/lib/x\ntrust=/etc/x.json\ninstall_on_reboot=off"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err == nil && (c.State == "" || c.Trust == "") {
			t.Fatalf("accepted an empty path: %q", data)
		}
	})
}

// The example configuration shipped with the systemd units parses.
func TestShippedConfig(t *testing.T) {
	c, err := LoadConfig("../../packaging/systemd/livesplice.conf", true)
	if err != nil || c.Repo == "" || !c.AutoInstall || c.Report {
		t.Fatalf("%+v %v", c, err)
	}
}

// A scheduled run with auto_install off fetches and verifies into the
// cache and touches no process; a removed update becomes revoked.
func TestFetchOnlyAndRevoked(t *testing.T) {
	dir, url := newRepo(t)
	f := &update.File{ID: "agent-unit-fix", Kind: update.KindProcess, Patch: strings.Repeat("0", 64),
		Targets: []update.Target{{Path: "agent-unit-test-target-that-never-runs"}}}
	data, err := update.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "fix.lsu")
	os.WriteFile(file, data, 0o644)
	if err := repo.Add(dir, []string{file}, nil, repo.Options{}); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	o := Options{Repo: url, Trust: filepath.Join(dir, repo.RootFile), State: state, FetchOnly: true, Retries: 1}
	rep, err := Upgrade(o)
	if err != nil || rep.Err() != nil || strings.Join(rep.Cached, ",") != "agent-unit-fix" || rep.StreamVersion != 2 {
		t.Fatalf("fetch only: %+v %v", rep, err)
	}
	if got, _ := os.ReadFile(filepath.Join(state, "updates", "agent-unit-fix.lsu")); string(got) != string(data) {
		t.Fatal("the verified file is not cached")
	}
	if err := repo.Remove(dir, []string{"agent-unit-fix"}, repo.Options{}); err != nil {
		t.Fatal(err)
	}
	if rep, err = Upgrade(o); err != nil || len(rep.Cached) != 0 {
		t.Fatalf("after remove: %+v %v", rep, err)
	}
	rec, err := (&stateDir{dir: state}).read()
	if err != nil || strings.Join(rec.Revoked, ",") != "agent-unit-fix" || len(rec.Updates) != 0 {
		t.Fatalf("record after remove: %+v %v", rec, err)
	}
}
