package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The real package: redis 5:7.0.15-1~deb12u7 (bookworm) to
// ~deb12u10 (bookworm-security), whose five added patches each change a
// function of src/*.c linked into the server, which Debian ships as
// /usr/bin/redis-check-rdb and redis-check-aof (copies of the linked
// src/redis-server; /usr/bin/redis-server a symlink). create --deb used
// to say "nothing to do". Slow (a full redis build, twice): only with
// LIVESPLICE_CORPUS=1, redis-tools at the old version installed
// (apt-get install redis-tools=5:7.0.15-1~deb12u7) and deb-src entries
// for bookworm and bookworm-security.
const (
	redisFrom = "5:7.0.15-1~deb12u7"
	redisTo   = "5:7.0.15-1~deb12u10"
)

var redisPatches = []string{"CVE-2026-23631.patch", "CVE-2026-25243.patch", "CVE-2026-66373.patch", "CVE-2026-81934.patch", "CVE-2026-92925.patch"}

func redisPrecheck(t *testing.T) {
	t.Helper()
	if os.Getenv("LIVESPLICE_CORPUS") != "1" {
		t.Skip("a real package's build: set LIVESPLICE_CORPUS=1")
	}
	if os.Getuid() != 0 {
		t.Skip("needs root (apt-get build-dep)")
	}
	v, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", "redis-tools").Output()
	if err != nil || string(v) != redisFrom {
		t.Skipf("redis-tools %s is not installed (%q): apt-get install redis-tools=%s", redisFrom, v, redisFrom)
	}
}

// Not "nothing to do": an update of the server's shipped file, or an
// error that names it.
func TestDebCorpusRedis(t *testing.T) {
	redisPrecheck(t)
	work := t.TempDir()
	upd := filepath.Join(work, "redis.lsu")
	r := run(t, "create", "--deb", "redis", "--to", redisTo, "-o", upd)
	t.Logf("create --to: exit %d\nstdout: %s\nstderr: %s", r.exit, r.stdout, r.stderr)
	if strings.Contains(r.stdout, "nothing to do") {
		t.Fatalf("create --deb redis --to %s: %q: the server's fixes were dropped", redisTo, r.stdout)
	}
	server := func(s string) bool {
		return strings.Contains(s, "/usr/bin/redis-check-rdb") || strings.Contains(s, "/usr/bin/redis-check-aof")
	}
	if r.exit == 0 {
		f := readUpdate(t, upd)
		ok := false
		for _, tg := range f.Targets {
			if server(tg.Path) && tg.PreBuildID == buildID(t, tg.Path) {
				ok = true
			}
		}
		if !ok {
			t.Fatalf("update targets %v: none is the shipped server (redis-check-rdb/aof)", f.Targets)
		}
	} else if !server(r.stderr) {
		t.Fatalf("create failed without naming the shipped server: %s", r.stderr)
	}
}

// --split: each of the five patches is reported by name, made or not
// made with a reason; none is "nothing to do".
func TestDebCorpusRedisSplit(t *testing.T) {
	redisPrecheck(t)
	dir := filepath.Join(t.TempDir(), "updates")
	r := run(t, "create", "--deb", "redis", "--to", redisTo, "--split", "-o", dir)
	t.Logf("create --split: exit %d\nstdout: %s\nstderr: %s", r.exit, r.stdout, r.stderr)
	for _, p := range redisPatches {
		found := false
		for _, l := range strings.Split(r.stdout, "\n") {
			if !strings.Contains(l, "debian/patches/"+p) {
				continue
			}
			found = true
			if strings.HasPrefix(l, "nothing to do") {
				t.Errorf("%s: %q: its fix was dropped", p, l)
			}
		}
		if !found {
			t.Errorf("%s is not reported", p)
		}
	}
	var made []string
	for _, l := range strings.Split(r.stdout, "\n") {
		if rest, ok := strings.CutPrefix(l, "made "); ok {
			path, _, _ := strings.Cut(rest, ": ")
			made = append(made, path)
		}
	}
	if len(made) == 0 {
		return
	}
	// A server started through a symlink named redis-server, as Debian's
	// /usr/bin/redis-server is: the updates apply in order, and it serves.
	work := t.TempDir()
	if err := os.Symlink("/usr/bin/redis-check-rdb", filepath.Join(work, "redis-server")); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(work, "sock")
	srv := exec.Command(filepath.Join(work, "redis-server"), "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { srv.Wait(); close(exited) }()
	t.Cleanup(func() { srv.Process.Kill(); <-exited })
	cli := func(args ...string) string {
		out, _ := exec.Command("redis-cli", append([]string{"-s", sock}, args...)...).Output()
		return strings.TrimSpace(string(out))
	}
	for cli("ping") != "PONG" {
		select {
		case <-exited:
			t.Fatal("redis-server exited")
		default:
		}
	}
	pid := strings.TrimSpace(fmt.Sprint(srv.Process.Pid))
	for _, u := range made {
		mustRun(t, "apply", "--pid", pid, u)
	}
	if cli("set", "k", "v") != "OK" || cli("get", "k") != "v" {
		t.Fatal("the patched server does not serve")
	}
	for i := len(made) - 1; i >= 0; i-- {
		mustRun(t, "undo", "--pid", pid, readUpdate(t, made[i]).ID)
	}
	if cli("get", "k") != "v" {
		t.Fatal("the server does not serve after undo")
	}
}
