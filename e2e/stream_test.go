package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"livesplice/internal/repo"
	"livesplice/internal/server"
)

// The update stream end to end: a repository, `livesplice serve` as a real
// process, and agents (each with its own --state) on loopback patching
// processes this test started. The target binary has a name no other
// test uses, so an agent's default (every process) only reaches ours.

// streamFixture is a published repository and the builds it is for.
type streamFixture struct {
	work, run, other, repo, trust, config string
	fix1, fix2                            string // update files; fix2 requires fix1
}

func newStreamFixture(t *testing.T) *streamFixture {
	t.Helper()
	caseDir, _ := filepath.Abs("testdata/stream")
	f := &streamFixture{work: t.TempDir()}
	sh(t, f.work, "mkdir src run other")
	src := filepath.Join(f.work, "src")
	f.run = filepath.Join(f.work, "run")
	f.other = filepath.Join(f.work, "other")
	copyTree(t, filepath.Join(caseDir, "src"), src)
	copyTree(t, filepath.Join(caseDir, "src"), f.run)
	copyTree(t, filepath.Join(caseDir, "other"), f.other)
	sh(t, f.run, "make -s")
	sh(t, f.other, "make -s")
	f.fix1 = filepath.Join(f.work, "fix1.lsu")
	f.fix2 = filepath.Join(f.work, "fix2.lsu")
	mustRun(t, "create", "--src", src, "--id", "stream-e2e-fix1", "-o", f.fix1, filepath.Join(caseDir, "fix1.patch"))
	sh(t, src, "patch -s -p1 < "+filepath.Join(caseDir, "fix1.patch"))
	mustRun(t, "create", "--src", src, "--id", "stream-e2e-fix2", "--requires", "stream-e2e-fix1", "-o", f.fix2, filepath.Join(caseDir, "fix2.patch"))
	f.repo = filepath.Join(f.work, "repo")
	mustRun(t, "repo", "init", f.repo)
	mustRun(t, "repo", "add", f.repo, f.fix1, f.fix2, "--binary", filepath.Join(f.run, "stream_e2e_target"))
	f.trust = filepath.Join(f.repo, repo.RootFile)
	// The configuration file supplies the pinned root; flags the rest.
	f.config = filepath.Join(f.work, "livesplice.conf")
	conf := "# test agent\ntrust = " + f.trust + "\nauto_install = yes\n"
	if err := os.WriteFile(f.config, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// copyRepo copies the repository, to serve a changed copy of it.
func (f *streamFixture) copyRepo(t *testing.T, name string) string {
	t.Helper()
	dst := filepath.Join(f.work, name)
	if out, err := exec.Command("cp", "-a", f.repo, dst).CombinedOutput(); err != nil {
		t.Fatalf("copy repository: %v %s", err, out)
	}
	return dst
}

// state is a new agent state directory.
func (f *streamFixture) state(t *testing.T, name string) string {
	return filepath.Join(f.work, "state-"+name)
}

// upgrade runs the agent.
func (f *streamFixture) upgrade(t *testing.T, state, url string, extra ...string) result {
	t.Helper()
	a := []string{"upgrade", "--config", f.config, "--state", state}
	if url != "" {
		a = append(a, "--repo", url)
	}
	return run(t, append(a, extra...)...)
}

// served is a `livesplice serve` process.
type served struct {
	url string
	cmd *exec.Cmd
}

func serveRepo(t *testing.T, dir string) *served {
	t.Helper()
	cmd := exec.Command(livesplice, "serve", dir, "--addr", "127.0.0.1:0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &served{cmd: cmd}
	t.Cleanup(s.kill)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("serve: no address: %v", err)
	}
	_, at, ok := strings.Cut(strings.TrimSpace(line), " at ")
	if !ok {
		t.Fatalf("serve: %q", line)
	}
	s.url = at
	return s
}

// kill stops the server this test started, by pid.
func (s *served) kill() {
	if s.cmd.ProcessState == nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
}

// applied lists the updates show reports for a process.
func applied(t *testing.T, p *prog) string {
	t.Helper()
	r := mustRun(t, "show", "--pid", p.pid(), "--json")
	var sj struct {
		Updates []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"updates"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &sj); err != nil {
		t.Fatalf("show --json: %v: %q", err, r.stdout)
	}
	var ids []string
	for _, u := range sj.Updates {
		ids = append(ids, u.ID)
	}
	return strings.Join(ids, ",")
}

const (
	unpatched = "shipping=1500" // 100 items, before any fix
	fixed1    = "shipping=0"    // 100 items with fix1 (and fix2)
	fixed2    = "shipping=520"  // 10 items with fix2
	original  = "shipping=600"  // 10 items before fix2
)

func TestStream(t *testing.T) {
	slow(t)
	top := t
	f := newStreamFixture(t)
	srv := serveRepo(t, f.repo)

	t.Run("TwoAgents", func(t *testing.T) {
		p1 := start(t, f.run, "./stream_e2e_target")
		p2 := start(t, f.run, "./stream_e2e_target")
		odd := start(t, f.other, "./stream_e2e_target") // another build: not a target
		for _, p := range []*prog{p1, p2, odd} {
			p.query("1")
		}
		s1, s2 := f.state(t, "a1"), f.state(t, "a2")

		r := f.upgrade(t, s1, srv.url, "--dry-run", "--pid", p1.pid())
		if r.exit != 0 || !strings.Contains(r.stdout, "stream-e2e-fix1\twould apply") || applied(t, p1) != "" {
			t.Fatalf("dry-run: exit %d %q %q; applied %q", r.exit, r.stdout, r.stderr, applied(t, p1))
		}
		r = mustRun(t, "show", "--available", "--config", f.config, "--repo", srv.url, "--state", s1)
		if !strings.Contains(r.stdout, "stream-e2e-fix2\tprocess\trequires stream-e2e-fix1\tpending for pids "+p1.pid()+","+p2.pid()) &&
			!strings.Contains(r.stdout, "pending for pids "+p2.pid()+","+p1.pid()) {
			t.Fatalf("show --available: %q", r.stdout)
		}

		r = f.upgrade(t, s1, srv.url, "--pid", p1.pid())
		if r.exit != 0 || strings.TrimSpace(r.stdout) != "stream version 2: applied 2, already applied 0, failed 0" {
			t.Fatalf("agent 1: exit %d %q %q", r.exit, r.stdout, r.stderr)
		}
		if got := applied(t, p1); got != "stream-e2e-fix1,stream-e2e-fix2" {
			t.Fatalf("agent 1 applied %q, want fix1 then fix2", got)
		}
		if got := p1.query("10"); got != fixed2 {
			t.Fatalf("pid %s after upgrade: %q", p1.pid(), got)
		}

		r = f.upgrade(t, s2, srv.url, "--all")
		if r.exit != 0 || strings.TrimSpace(r.stdout) != "stream version 2: applied 2, already applied 2, failed 0" {
			t.Fatalf("agent 2: exit %d %q %q", r.exit, r.stdout, r.stderr)
		}
		if got := p2.query("100"); got != fixed1 {
			t.Fatalf("pid %s after upgrade: %q", p2.pid(), got)
		}
		if got := odd.query("100"); got != "shipping=1700" || applied(t, odd) != "" {
			t.Fatalf("another build was touched: %q, %q", got, applied(t, odd))
		}
		// Idempotent.
		r = f.upgrade(t, s2, srv.url)
		if r.exit != 0 || strings.TrimSpace(r.stdout) != "stream version 2: applied 0, already applied 4, failed 0" {
			t.Fatalf("agent 2 again: exit %d %q %q", r.exit, r.stdout, r.stderr)
		}
		var rec struct {
			Targets map[string]struct {
				Updates []string `json:"updates"`
			} `json:"targets"`
		}
		data, err := os.ReadFile(filepath.Join(s2, "state.json"))
		if err != nil || json.Unmarshal(data, &rec) != nil || len(rec.Targets) != 1 {
			t.Fatalf("agent 2 state: %v %s", err, data)
		}
		for k, v := range rec.Targets {
			if !strings.HasPrefix(k, "stream_e2e_target@") || strings.Join(v.Updates, ",") != "stream-e2e-fix1,stream-e2e-fix2" {
				t.Fatalf("agent 2 effective version: %s %v", k, v.Updates)
			}
		}

		// The opt-in fleet report: each agent posts its machine and
		// targets; the server's page shows which updates run where.
		for _, a := range [][2]string{{"stream-e2e-a", s1}, {"stream-e2e-b", s2}} {
			conf := filepath.Join(f.work, a[0]+".conf")
			os.WriteFile(conf, []byte("trust = "+f.trust+"\nreport = yes\nmachine_id = "+a[0]+"\n"), 0o644)
			if r := f.upgrade(t, a[1], srv.url, "--config", conf); r.exit != 0 || r.stderr != "" {
				t.Fatalf("agent %s reporting: exit %d %q %q", a[0], r.exit, r.stdout, r.stderr)
			}
		}
		res, err := http.Get(srv.url + "/fleet.json")
		if err != nil {
			t.Fatal(err)
		}
		var fv struct {
			StreamVersion int64 `json:"stream_version"`
			Machines      []struct {
				MachineID string `json:"machine_id"`
				Behind    bool   `json:"behind"`
			} `json:"machines"`
			Updates []struct {
				ID       string   `json:"id"`
				Machines []string `json:"machines"`
			} `json:"updates"`
		}
		json.NewDecoder(res.Body).Decode(&fv)
		res.Body.Close()
		if fv.StreamVersion != 2 || len(fv.Machines) != 2 || fv.Machines[0].Behind || fv.Machines[1].Behind ||
			len(fv.Updates) != 2 || strings.Join(fv.Updates[1].Machines, ",") != "stream-e2e-a,stream-e2e-b" {
			t.Fatalf("fleet: %+v", fv)
		}

		// A bad update pulled from the stream: agents undo it where it runs.
		mustRun(t, "repo", "remove", f.repo, "stream-e2e-fix2")
		r = f.upgrade(t, s2, srv.url)
		if r.exit != 0 || strings.TrimSpace(r.stdout) != "stream version 3: applied 0, already applied 2, failed 0, undone 2" {
			t.Fatalf("after remove: exit %d %q %q", r.exit, r.stdout, r.stderr)
		}
		for _, p := range []*prog{p1, p2} {
			if got := applied(t, p); got != "stream-e2e-fix1" || p.query("10") != original || p.query("100") != fixed1 {
				t.Fatalf("pid %s after remove: applied %q", p.pid(), got)
			}
		}
		mustRun(t, "repo", "add", f.repo, f.fix2, "--binary", filepath.Join(f.run, "stream_e2e_target")) // published again
		r = f.upgrade(t, s2, srv.url)
		if r.exit != 0 || strings.TrimSpace(r.stdout) != "stream version 4: applied 2, already applied 2, failed 0" {
			t.Fatalf("after re-add: exit %d %q %q", r.exit, r.stdout, r.stderr)
		}

		// Keys rotated: the agent follows the new root, signed by the old.
		mustRun(t, "repo", "rotate-key", f.repo, "root")
		mustRun(t, "repo", "rotate-key", f.repo, "timestamp")
		r = f.upgrade(t, s2, srv.url)
		if r.exit != 0 || strings.TrimSpace(r.stdout) != "stream version 6: applied 0, already applied 4, failed 0" {
			t.Fatalf("after key rotation: exit %d %q %q", r.exit, r.stdout, r.stderr)
		}

		// The process restarts and the server is gone: --init applies the
		// cached verified set offline.
		srv.kill()
		p3 := start(t, f.run, "./stream_e2e_target")
		if got := p3.query("100"); got != unpatched {
			t.Fatalf("restarted: %q", got)
		}
		r = f.upgrade(t, s1, "", "--init", "--pid", p3.pid())
		if r.exit != 0 || applied(t, p3) != "stream-e2e-fix1,stream-e2e-fix2" || p3.query("10") != fixed2 {
			t.Fatalf("--init: exit %d %q %q; applied %q", r.exit, r.stdout, r.stderr, applied(t, p3))
		}
		// The server killed: the agent fails cleanly, and succeeds once it
		// is back.
		p4 := start(t, f.run, "./stream_e2e_target")
		r = f.upgrade(t, s1, srv.url, "--pid", p4.pid())
		if r.exit != 1 || !strings.Contains(r.stderr, "cannot fetch from the update stream") || applied(t, p4) != "" {
			t.Fatalf("server down: exit %d %q %q", r.exit, r.stdout, r.stderr)
		}
		srv = serveRepo(top, f.repo) // for the next subtests too
		r = f.upgrade(t, s1, srv.url, "--pid", p4.pid())
		if r.exit != 0 || applied(t, p4) != "stream-e2e-fix1,stream-e2e-fix2" {
			t.Fatalf("server back: exit %d %q %q", r.exit, r.stdout, r.stderr)
		}
	})

	t.Run("Racing", func(t *testing.T) {
		p := start(t, f.run, "./stream_e2e_target")
		p.query("1")
		var wg sync.WaitGroup
		rs := make([]result, 2)
		for i := range rs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rs[i] = f.upgrade(t, f.state(t, fmt.Sprint("race", i)), srv.url, "--pid", p.pid())
			}()
		}
		wg.Wait()
		for _, r := range rs {
			if r.exit != 0 {
				t.Fatalf("racing agent: exit %d %q %q", r.exit, r.stdout, r.stderr)
			}
		}
		if got := applied(t, p); got != "stream-e2e-fix1,stream-e2e-fix2" {
			t.Fatalf("racing agents: applied %q", got)
		}
	})

	t.Run("MidDownload", func(t *testing.T) {
		// A server that dies in the middle of the first download of an
		// update: the connection drops after half the bytes.
		var mu sync.Mutex
		cut := 0
		h := server.Handler(f.repo)
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			first := strings.HasPrefix(r.URL.Path, "/targets/") && cut == 0
			if first {
				cut++
			}
			mu.Unlock()
			if !first {
				h.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			conn, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body))
			buf.Write(body[:len(body)/2])
			buf.Flush()
			if tc, ok := conn.(*net.TCPConn); ok {
				tc.SetLinger(0) // a reset, as from a killed server
			}
			conn.Close()
		}))
		defer ts.Close()
		p := start(t, f.run, "./stream_e2e_target")
		p.query("1")
		r := f.upgrade(t, f.state(t, "cut"), ts.URL, "--pid", p.pid())
		mu.Lock()
		defer mu.Unlock()
		if r.exit != 0 || cut != 1 || applied(t, p) != "stream-e2e-fix1,stream-e2e-fix2" {
			t.Fatalf("cut download: exit %d %q %q, cuts %d, applied %q", r.exit, r.stdout, r.stderr, cut, applied(t, p))
		}
	})

	t.Run("Refusals", func(t *testing.T) {
		p := start(t, f.run, "./stream_e2e_target")
		p.query("1")
		before := mappings(t, p.pid())
		refused := func(name, url, state, want string) {
			t.Helper()
			r := f.upgrade(t, state, url, "--pid", p.pid())
			if r.exit != 9 || !strings.Contains(r.stderr, want) {
				t.Fatalf("%s: want exit 9 and %q, got exit %d: %q %q", name, want, r.exit, r.stdout, r.stderr)
			}
			if got := applied(t, p); got != "" {
				t.Fatalf("%s: applied %q", name, got)
			}
			if after := mappings(t, p.pid()); after != before {
				t.Fatalf("%s: the process changed:\n%s\n%s", name, before, after)
			}
			if got := p.query("100"); got != unpatched {
				t.Fatalf("%s: %q", name, got)
			}
		}
		serveDir := func(dir string) string {
			ts := httptest.NewServer(server.Handler(dir))
			t.Cleanup(ts.Close)
			return ts.URL
		}

		// A tampered update file.
		tampered := f.copyRepo(t, "tampered")
		files, _ := filepath.Glob(filepath.Join(tampered, repo.TargetsDir, "*.stream-e2e-fix1.lsu"))
		if len(files) != 1 {
			t.Fatalf("published files: %v", files)
		}
		data, _ := os.ReadFile(files[0])
		data[len(data)/2] ^= 1
		os.WriteFile(files[0], data, 0o644)
		refused("tampered", serveDir(tampered), f.state(t, "tampered"), "does not match its signed length and hash")

		// Expired metadata: a stream nobody re-signed (a frozen one).
		expired := f.copyRepo(t, "expired")
		past := func() time.Time { return time.Now().Add(-48 * time.Hour) }
		if err := repo.Refresh(expired, repo.Options{Now: past, TimestampExpiry: time.Hour, SnapshotExpiry: time.Hour}); err != nil {
			t.Fatal(err)
		}
		refused("expired", serveDir(expired), f.state(t, "expired"), "expired metadata")

		// A rollback to an older snapshot: the agent has seen a newer one.
		old := f.copyRepo(t, "old")
		newer := f.copyRepo(t, "newer")
		if err := repo.Refresh(newer, repo.Options{}); err != nil {
			t.Fatal(err)
		}
		st := f.state(t, "rollback")
		if r := f.upgrade(t, st, serveDir(newer), "--dry-run", "--pid", p.pid()); r.exit != 0 {
			t.Fatalf("dry-run: exit %d %q", r.exit, r.stderr)
		}
		refused("rollback", serveDir(old), st, "rollback refused")

		// A stream signed with other keys than the pinned root's.
		other := filepath.Join(f.work, "otherrepo")
		mustRun(t, "repo", "init", other)
		mustRun(t, "repo", "add", other, f.fix1)
		refused("wrong key", serveDir(other), f.state(t, "wrongkey"), "bad signature")
	})
}
