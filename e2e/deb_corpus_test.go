package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
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

// redisMade are the patches create makes; the fifth, CVE-2026-92925.patch,
// is refused: its new code in cluster.c refers to anonymous data of .data
// (an objdiff limit, docs/corpus.md).
var redisMade = redisPatches[:4]

const redisRefused = "CVE-2026-92925.patch"

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

// Not "nothing to do": refused, naming the shipped server and the reason
// the fifth patch cannot be made (its cluster.c change refers to anonymous
// data), since one update of all five holds that change too.
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
		t.Fatalf("create --deb redis --to %s: made an update of all five patches, but %s's change cannot be made: %s", redisTo, redisRefused, r.stdout)
	}
	if !server(r.stderr) {
		t.Fatalf("create failed without naming the shipped server: %s", r.stderr)
	}
	if !strings.Contains(r.stderr, "cluster.c") || !strings.Contains(r.stderr, "anonymous data") {
		t.Fatalf("create failed without naming cluster.c's reference to anonymous data: %s", r.stderr)
	}
}

// --split: each of the five patches is reported by name, made or not
// made with a reason; none is "nothing to do". The four that can be made
// are, and apply in order to a running server; the fifth is refused with
// its reason.
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
	for _, p := range redisMade {
		path := ""
		for _, l := range strings.Split(r.stdout, "\n") {
			if rest, ok := strings.CutPrefix(l, "made "); ok && strings.Contains(rest, ": debian/patches/"+p) {
				path, _, _ = strings.Cut(rest, ": ")
			}
		}
		if path == "" {
			t.Fatalf("%s: not made:\n%s", p, r.stdout)
		}
		made = append(made, path)
	}
	refused := false
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(l, "not made: debian/patches/"+redisRefused) && strings.Contains(l, "anonymous data") {
			refused = true
		}
	}
	if !refused {
		t.Fatalf("no line \"not made: debian/patches/%s ...: ... anonymous data ...\":\n%s", redisRefused, r.stdout)
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
	// Wait for the server to listen; the deadline only stops a test that
	// would hang (a server that never answers), it measures nothing.
	deadline := time.Now().Add(2 * time.Minute)
	for cli("ping") != "PONG" {
		select {
		case <-exited:
			t.Fatal("redis-server exited")
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("redis-server does not answer ping")
		}
	}
	pid := strings.TrimSpace(fmt.Sprint(srv.Process.Pid))
	var ids []string
	for _, u := range made {
		mustRun(t, "apply", "--pid", pid, u)
		ids = append(ids, readUpdate(t, u).ID)
	}
	var sj struct {
		Updates []struct {
			ID string `json:"id"`
		} `json:"updates"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, "show", "--pid", pid, "--json").stdout), &sj); err != nil {
		t.Fatalf("show --pid %s --json: %v", pid, err)
	}
	var shown []string
	for _, u := range sj.Updates {
		shown = append(shown, u.ID)
	}
	slices.Sort(shown)
	want := slices.Clone(ids)
	slices.Sort(want)
	if !slices.Equal(shown, want) {
		t.Fatalf("show --pid lists %v, want the four applied updates %v", shown, want)
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
