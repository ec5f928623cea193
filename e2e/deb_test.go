package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"livesplice/internal/update"
)

// The Debian package of these tests: cJSON, a small C library from
// Debian main (source package cjson, binary libcjson1) that builds in
// about a minute, installed by .ci/run with libcjson-dev. Its shipped
// library is stripped; Debian built it with bookworm's gcc, so a rebuild
// here has the same code.
const (
	debSource = "cjson"
	debLib    = "/usr/lib/x86_64-linux-gnu/libcjson.so.1.7.15"
)

// debPrecheck skips a Debian test that cannot run here, and refuses to
// run where a process the test did not start maps the library: apply
// --all would patch it too.
func debPrecheck(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: builds a Debian package with apt (make test sets it up)")
	}
	if os.Getuid() != 0 {
		t.Skip("needs root: ptrace of every process mapping the library, apt")
	}
	if _, err := os.Stat(debLib); err != nil {
		t.Skipf("%s is not installed (.ci/run installs libcjson1 and libcjson-dev): %v", debLib, err)
	}
	if pids := mapping(t, debLib); len(pids) > 0 {
		t.Skipf("processes %v (not this test's) map %s: apply --all would patch them", pids, debLib)
	}
}

// mapping lists the processes that map file.
func mapping(t *testing.T, file string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		maps, err := os.ReadFile("/proc/" + e.Name() + "/maps")
		if err == nil && bytes.Contains(maps, []byte(file)) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

// readUpdate decodes an update file.
func readUpdate(t *testing.T, path string) *update.File {
	t.Helper()
	f, err := update.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// startDebProgs builds testdata/deb/prog.c against the installed library
// and starts n copies.
func startDebProgs(t *testing.T, work string, n int) []*prog {
	t.Helper()
	caseDir, _ := filepath.Abs("testdata/deb")
	sh(t, work, fmt.Sprintf("gcc -O2 -o deb_e2e_prog %s/prog.c -lcjson", caseDir))
	var ps []*prog
	for i := 0; i < n; i++ {
		ps = append(ps, start(t, work, "./deb_e2e_prog"))
	}
	return ps
}

// The queries of testdata/deb/prog.c and their answers before the fix.
var debQueries = []struct{ q, before, after string }{
	{"o name", "deb", "deb"},
	{"o __secret", "hidden", "none"}, // get_object_item: a static function, out of line in the shipped file
	{"a 1", "one", "one"},
	{"a 2", "two", "none"}, // get_array_item: a static function inlined into exported ones
}

func wantDeb(t *testing.T, ps []*prog, after bool, when string) {
	t.Helper()
	for _, p := range ps {
		for _, q := range debQueries {
			want := q.before
			if after {
				want = q.after
			}
			if got := p.query(q.q); got != want {
				t.Fatalf("pid %s %s: %q answers %q, want %q", p.pid(), when, q.q, got, want)
			}
		}
	}
}

// create --deb builds an update for the installed, stripped libcjson from
// Debian's source package and a fix to two static functions (one inlined
// into exported functions); apply --all patches every process mapping
// it, undo --all restores them. An update whose recovered symbols belong
// to another build of the file is refused, naming the static function.
func TestDebCreateApplyAll(t *testing.T) {
	debPrecheck(t)
	caseDir, _ := filepath.Abs("testdata/deb")
	work := t.TempDir()
	upd := filepath.Join(work, "deb-fix.lsu")
	mustRun(t, "create", "--deb", debSource, "--id", "deb-e2e-fix", "-o", upd, filepath.Join(caseDir, "fix.patch"))

	f := readUpdate(t, upd)
	if len(f.Targets) != 1 {
		t.Fatalf("update has %d targets, want 1 (%s)", len(f.Targets), debLib)
	}
	tg := f.Targets[0]
	id := buildID(t, debLib)
	if tg.Path != debLib || tg.PreBuildID != id || tg.Symtab == nil || tg.Symtab.BuildID != id {
		t.Fatalf("target %s build-id %s symtab %v: want the installed %s, build-id %s, with its recovered symbols", tg.Path, tg.PreBuildID, tg.Symtab != nil, debLib, id)
	}
	replaced := map[string]bool{}
	for _, fn := range tg.Functions {
		if fn.Status == update.StatusReplaced {
			replaced[fn.Name] = true
		}
	}
	if !replaced["get_object_item"] || !replaced["cJSON_GetArrayItem"] {
		t.Fatalf("replaced functions %v: want the static get_object_item and the exported cJSON_GetArrayItem (get_array_item inlined)", replaced)
	}

	ps := startDebProgs(t, work, 2)
	wantDeb(t, ps, false, "before apply")
	r := run(t, "apply", "--all", upd)
	if r.exit != 0 || strings.TrimSpace(r.stdout) != "patched 2, skipped 0, failed 0" {
		t.Fatalf("apply --all: exit %d, stdout %q, stderr %q", r.exit, r.stdout, r.stderr)
	}
	wantDeb(t, ps, true, "after apply --all")
	r = mustRun(t, "undo", "--all", "deb-e2e-fix")
	if strings.TrimSpace(r.stdout) != "unpatched 2, skipped 0, failed 0" {
		t.Fatalf("undo --all: %q", r.stdout)
	}
	wantDeb(t, ps, false, "after undo --all")

	// Symbols recovered for another build-id are not used: the static
	// function cannot be found, and apply refuses by its name.
	tg.Symtab.BuildID = strings.Repeat("0", len(id))
	f.Targets[0] = tg
	data, err := update.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(work, "other-build.lsu")
	if err := os.WriteFile(other, data, 0o644); err != nil {
		t.Fatal(err)
	}
	r = run(t, "apply", "--pid", ps[0].pid(), other)
	if r.exit == 0 || !strings.Contains(r.stderr, "get_object_item") {
		t.Fatalf("apply with symbols of another build: exit %d, stderr %q: want a refusal naming get_object_item", r.exit, r.stderr)
	}
	wantDeb(t, ps, false, "after the refused apply")
}

// debRepo is a local apt repository of source packages, seen through its
// own apt configuration (APT_CONFIG), so that the machine's sources stay
// untouched and the test never depends on what the archive serves.
type debRepo struct {
	dir, conf string
}

// newDebRepo makes a repository holding the installed version of cjson
// (fetched with apt-get source, as is) and, for each of patches, a new
// version: that source with the patch added to debian/patches.
func newDebRepo(t *testing.T, work, version string, patches map[string]string) *debRepo {
	t.Helper()
	repo := &debRepo{dir: filepath.Join(work, "repo")}
	sh(t, work, "mkdir -p repo/pool apt/lists/partial apt/cache/archives/partial apt/sources.list.d")
	pool := filepath.Join(repo.dir, "pool")
	fetch := exec.Command("apt-get", "source", "-q", "--only-source", debSource+"="+version)
	fetch.Dir = pool
	if out, err := fetch.CombinedOutput(); err != nil {
		t.Fatalf("apt-get source %s=%s (.ci/run adds deb-src entries): %v\n%s", debSource, version, err, out)
	}
	tree, err := filepath.Glob(filepath.Join(pool, debSource+"-*"))
	if err != nil || len(tree) != 1 {
		t.Fatalf("unpacked trees: %v %v", tree, err)
	}
	for newVersion, patch := range patches {
		dir := filepath.Join(pool, "v-"+newVersion)
		sh(t, work, fmt.Sprintf("cp -a %s %s", tree[0], dir))
		name := "livesplice-e2e-" + newVersion + ".patch"
		sh(t, dir, fmt.Sprintf("cp %s debian/patches/%s && echo %s >> debian/patches/series", patch, name, name))
		changelog := filepath.Join(dir, "debian", "changelog")
		old, err := os.ReadFile(changelog)
		if err != nil {
			t.Fatal(err)
		}
		entry := fmt.Sprintf("%s (%s) bookworm-security; urgency=medium\n\n  * livesplice e2e test upload.\n\n -- livesplice e2e <e2e@livesplice.invalid>  Thu, 26 Nov 2026 12:00:00 +0000\n\n", debSource, newVersion)
		if err := os.WriteFile(changelog, append([]byte(entry), old...), 0o644); err != nil {
			t.Fatal(err)
		}
		// dpkg-source applies the new patch (.pc records the old ones)
		// and builds the source package next to the original tarball.
		sh(t, pool, "dpkg-source -q -b "+filepath.Base(dir))
	}
	return indexDebRepo(t, work, repo.dir)
}

// indexDebRepo indexes the source packages of dir/pool and makes an apt
// configuration (in work) whose only source is that repository.
func indexDebRepo(t *testing.T, work, dir string) *debRepo {
	t.Helper()
	repo := &debRepo{dir: dir}
	sh(t, work, "mkdir -p apt/lists/partial apt/cache/archives/partial apt/sources.list.d")
	sh(t, repo.dir, "apt-ftparchive sources pool > Sources")
	repo.conf = filepath.Join(work, "apt.conf")
	apt := filepath.Join(work, "apt")
	conf := fmt.Sprintf(`Dir::Etc::sourcelist "%s/sources.list";
Dir::Etc::sourceparts "%s/sources.list.d";
Dir::State::lists "%s/lists";
Dir::Cache "%s/cache";
`, apt, apt, apt, apt)
	if err := os.WriteFile(repo.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(apt, "sources.list"), []byte(fmt.Sprintf("deb-src [trusted=yes] file:%s ./\n", repo.dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	up := exec.Command("apt-get", "update", "-q")
	up.Env = append(os.Environ(), "APT_CONFIG="+repo.conf)
	if out, err := up.CombinedOutput(); err != nil {
		t.Fatalf("apt-get update of the local repository: %v\n%s", err, out)
	}
	return repo
}

// run runs livesplice with the repository's apt configuration.
func (r *debRepo) run(t *testing.T, args ...string) result {
	t.Helper()
	return r.runEnv(t, nil, args...)
}

// runEnv is run with env added to the environment.
func (r *debRepo) runEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(livesplice, args...)
	cmd.Env = append(append(os.Environ(), "APT_CONFIG="+r.conf), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	res := result{stdout: o.String(), stderr: e.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.exit = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return res
}

// installedVersion is the installed version of the test's source package.
func installedVersion(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("dpkg-query", "-W", "-f", "${source:Version}", "libcjson1").Output()
	if err != nil || len(out) == 0 {
		t.Fatalf("dpkg-query libcjson1: %v", err)
	}
	return string(out)
}

// create --deb --to takes the fix from a newer version of the package,
// made here: the installed version's source plus a debian/patches entry.
// A newer version that changes no code has nothing to do.
func TestDebTo(t *testing.T) {
	debPrecheck(t)
	caseDir, _ := filepath.Abs("testdata/deb")
	work := t.TempDir()
	v := installedVersion(t)
	fixed, docs := v+"+ls1", v+"+ls2"
	repo := newDebRepo(t, work, v, map[string]string{
		fixed: filepath.Join(caseDir, "fix.patch"),
		docs:  filepath.Join(caseDir, "docs.patch"),
	})

	r := repo.run(t, "create", "--deb", debSource, "--to", docs, "-o", filepath.Join(work, "docs.lsu"))
	if r.exit != 0 || !strings.HasPrefix(r.stdout, "nothing to do") {
		t.Fatalf("create --to %s (documentation only): exit %d, stdout %q, stderr %q", docs, r.exit, r.stdout, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(work, "docs.lsu")); err == nil {
		t.Fatalf("create --to %s wrote an update", docs)
	}

	upd := filepath.Join(work, "to.lsu")
	r = repo.run(t, "create", "--deb", debSource, "--to", fixed, "-o", upd)
	if r.exit != 0 {
		t.Fatalf("create --to %s: exit %d: %s", fixed, r.exit, r.stderr)
	}
	f := readUpdate(t, upd)
	if want := strings.NewReplacer(":", "_", "+", "_", "~", "_").Replace(debSource + "-" + fixed); f.ID != want {
		t.Fatalf("update id %q, want %q", f.ID, want)
	}
	ps := startDebProgs(t, work, 1)
	wantDeb(t, ps, false, "before apply")
	r = run(t, "apply", "--all", upd)
	if r.exit != 0 || strings.TrimSpace(r.stdout) != "patched 1, skipped 0, failed 0" {
		t.Fatalf("apply --all: exit %d, stdout %q, stderr %q", r.exit, r.stdout, r.stderr)
	}
	wantDeb(t, ps, true, "after apply --all")
	mustRun(t, "undo", "--all", f.ID)
	wantDeb(t, ps, false, "after undo --all")
}

// BenchmarkDebCreate compares create --deb (pre, post and the symbol
// rebuild) with a plain Debian build of the package (dpkg-buildpackage
// -b, tests skipped as create skips them): the ratio is the cost of a
// live update over a package rebuild.
//
//	go test -run '^$' -bench DebCreate -benchtime 1x ./e2e/
func BenchmarkDebCreate(b *testing.B) {
	if os.Getuid() != 0 {
		b.Skip("needs root")
	}
	caseDir, _ := filepath.Abs("testdata/deb")
	v, err := exec.Command("dpkg-query", "-W", "-f", "${source:Version}", "libcjson1").Output()
	if err != nil {
		b.Skip("libcjson1 not installed")
	}
	var plain, create time.Duration
	for i := 0; i < b.N; i++ {
		work := b.TempDir()
		sh(b, work, fmt.Sprintf("apt-get source -q --only-source %s=%s >/dev/null 2>&1", debSource, v))
		start := time.Now()
		sh(b, work, "cd "+debSource+"-* && DEB_BUILD_OPTIONS=nocheck dpkg-buildpackage -b -uc -us >/dev/null 2>&1")
		plain += time.Since(start)
		start = time.Now()
		mustRun(b, "create", "--deb", debSource, "-o", filepath.Join(work, "fix.lsu"), filepath.Join(caseDir, "fix.patch"))
		create += time.Since(start)
	}
	b.ReportMetric(plain.Seconds()/float64(b.N), "plain-s/op")
	b.ReportMetric(create.Seconds()/float64(b.N), "create-s/op")
	b.ReportMetric(create.Seconds()/plain.Seconds(), "create/plain")
}
