package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"livesplice/internal/update"
)

// lsdemo is a Debian source package made by these tests
// (testdata/debpkg/src): its build links lsdemo-server and lsdemo-tool;
// its install step ships lsdemo-server as /usr/bin/lsdemo-check (binary
// package lsdemo, /usr/bin/lsdemo-server a symlink to it, the way redis
// ships redis-server) and lsdemo-tool in binary package lsdemo-tools.
// Versions: 1.0-1; 1.0-2 adds testdata/debpkg/fix.patch (a change of
// level() in server.c, CVE-2026-0001 in its header) to debian/patches;
// 1.0-3 adds fix.patch, scale.patch (a new initial value of a global:
// not live-patchable) and twice.patch (a change of twice(),
// CVE-2026-0003 in debian/changelog).
type lsdemo struct {
	repo *debRepo
	debs map[string][]string // version -> its binary packages (.deb)
}

const (
	lsdemoCheck  = "/usr/bin/lsdemo-check"
	lsdemoServer = "/usr/bin/lsdemo-server"
)

var lsdemoFixture *lsdemo

// lsdemoPrecheck skips where the package cannot be built and installed.
func lsdemoPrecheck(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: builds and installs a Debian package (make test runs it)")
	}
	if os.Getuid() != 0 {
		t.Skip("needs root: dpkg -i, ptrace")
	}
	for _, tool := range []string{"dpkg-buildpackage", "dh", "apt-ftparchive"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s missing (dpkg-dev, debhelper, apt-utils): %v", tool, err)
		}
	}
}

// lsdemoPackage makes (once per test binary) the source packages of
// lsdemo in a local apt repository and builds their binary packages.
func lsdemoPackage(t *testing.T) *lsdemo {
	t.Helper()
	if lsdemoFixture != nil {
		return lsdemoFixture
	}
	caseDir, _ := filepath.Abs("testdata/debpkg")
	work := filepath.Join(filepath.Dir(livesplice), "lsdemo")
	os.RemoveAll(work)
	pool := filepath.Join(work, "repo", "pool")
	base := filepath.Join(pool, "lsdemo-1.0")
	sh(t, filepath.Dir(livesplice), fmt.Sprintf("mkdir -p %s && cp -a %s/src %s", pool, caseDir, base))
	sh(t, pool, "tar --exclude=debian -czf lsdemo_1.0.orig.tar.gz lsdemo-1.0 && dpkg-source -q -b lsdemo-1.0")
	addDebVersion(t, pool, base, "lsdemo", "1.0-2", nil, filepath.Join(caseDir, "fix.patch"))
	addDebVersion(t, pool, base, "lsdemo", "1.0-3", map[string]string{"twice.patch": "twice.patch: thrice (CVE-2026-0003)"},
		filepath.Join(caseDir, "fix.patch"), filepath.Join(caseDir, "scale.patch"), filepath.Join(caseDir, "twice.patch"))
	l := &lsdemo{repo: indexDebRepo(t, work, filepath.Join(work, "repo")), debs: map[string][]string{}}
	for _, v := range []string{"1.0-1", "1.0-2"} {
		dir := filepath.Join(work, "bin-"+v)
		sh(t, work, fmt.Sprintf("mkdir -p %s && dpkg-source -q -x %s/lsdemo_%s.dsc %s/src", dir, pool, v, dir))
		sh(t, filepath.Join(dir, "src"), "dpkg-buildpackage -b -uc -us >../build.log 2>&1 || { tail -20 ../build.log; exit 1; }")
		debs, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
		if len(debs) != 2 {
			t.Fatalf("lsdemo %s: %d binary packages built, want 2: %v", v, len(debs), debs)
		}
		l.debs[v] = debs
	}
	lsdemoFixture = l
	return l
}

// addDebVersion makes source package version version of src in pool: the
// tree base (with its debian/) plus patches in debian/patches, a
// changelog entry with an item per patch (its name, or notes[name]).
func addDebVersion(t *testing.T, pool, base, src, version string, notes map[string]string, patches ...string) {
	t.Helper()
	dir := filepath.Join(pool, "v-"+version)
	sh(t, pool, fmt.Sprintf("rm -rf %s && cp -a %s %s && mkdir -p %s/debian/patches", dir, base, dir, dir))
	var items string
	for _, p := range patches {
		name := filepath.Base(p)
		sh(t, dir, fmt.Sprintf("cp %s debian/patches/%s && echo %s >> debian/patches/series", p, name, name))
		item := name
		if n, ok := notes[name]; ok {
			item = n
		}
		items += "  * " + item + "\n"
	}
	changelog := filepath.Join(dir, "debian", "changelog")
	old, err := os.ReadFile(changelog)
	if err != nil {
		t.Fatal(err)
	}
	entry := fmt.Sprintf("%s (%s) bookworm-security; urgency=medium\n\n%s\n -- livesplice e2e <e2e@livesplice.invalid>  Thu, 26 Nov 2026 12:00:00 +0000\n\n", src, version, items)
	if err := os.WriteFile(changelog, append([]byte(entry), old...), 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, pool, "dpkg-source -q -b "+filepath.Base(dir))
}

// install installs the packages with dpkg, and purges lsdemo's binary
// packages when the test ends (and before, in case a run was killed).
func (l *lsdemo) install(t *testing.T, debs ...string) {
	t.Helper()
	purge := func() { exec.Command("dpkg", "--purge", "lsdemo", "lsdemo-tools").Run() }
	purge()
	t.Cleanup(purge)
	sh(t, "/", "dpkg -i "+strings.Join(debs, " ")+" >/dev/null")
}

// deb is the binary package pkg of version v.
func (l *lsdemo) deb(t *testing.T, pkg, v string) string {
	t.Helper()
	for _, d := range l.debs[v] {
		if strings.HasPrefix(filepath.Base(d), pkg+"_") {
			return d
		}
	}
	t.Fatalf("no binary package %s %s", pkg, v)
	return ""
}

// wantLsdemoTarget checks that an update's one target is the installed
// lsdemo-check (by path and build-id) and replaces level().
func wantLsdemoTarget(t *testing.T, f *update.File) {
	t.Helper()
	if len(f.Targets) != 1 {
		t.Fatalf("update has %d targets, want 1 (%s)", len(f.Targets), lsdemoCheck)
	}
	tg := f.Targets[0]
	if tg.Path != lsdemoCheck || tg.PreBuildID != buildID(t, lsdemoCheck) {
		t.Fatalf("target %s build-id %s: want %s, build-id %s", tg.Path, tg.PreBuildID, lsdemoCheck, buildID(t, lsdemoCheck))
	}
	for _, fn := range tg.Functions {
		if fn.Name == "level" && fn.Status == update.StatusReplaced {
			return
		}
	}
	t.Fatalf("target %s: level() not replaced: %+v", tg.Path, tg.Functions)
}

// The build links lsdemo-server; the package ships it as lsdemo-check,
// lsdemo-server a symlink to it. create --deb --to matches the installed
// file to the build's output by build-id, not by name: the fix of the new
// version is made (it used to be "nothing to do"), and apply --all
// patches a program started through the symlink.
func TestDebShippedUnderAnotherName(t *testing.T) {
	lsdemoPrecheck(t)
	l := lsdemoPackage(t)
	l.install(t, l.debs["1.0-1"]...)
	work := t.TempDir()
	upd := filepath.Join(work, "to.lsu")
	r := l.repo.run(t, "create", "--deb", "lsdemo", "--to", "1.0-2", "-o", upd)
	if r.exit != 0 {
		t.Fatalf("create --deb lsdemo --to 1.0-2: exit %d, stdout %q, stderr %q", r.exit, r.stdout, r.stderr)
	}
	if _, err := os.Stat(upd); err != nil {
		t.Fatalf("create --deb lsdemo --to 1.0-2 wrote no update (stdout %q): the fix was dropped", r.stdout)
	}
	f := readUpdate(t, upd)
	wantLsdemoTarget(t, f)

	p := start(t, work, lsdemoServer)
	if got := p.query("500"); got != "high 1000" {
		t.Fatalf("before apply: 500 is %q, want high 1000", got)
	}
	r = run(t, "apply", "--all", upd)
	if r.exit != 0 || strings.TrimSpace(r.stdout) != "patched 1, skipped 0, failed 0" {
		t.Fatalf("apply --all: exit %d, stdout %q, stderr %q", r.exit, r.stdout, r.stderr)
	}
	if got := p.query("500"); got != "low 1000" {
		t.Fatalf("after apply: 500 is %q, want low 1000", got)
	}
	mustRun(t, "undo", "--all", f.ID)
	if got := p.query("500"); got != "high 1000" {
		t.Fatalf("after undo: 500 is %q, want high 1000", got)
	}
}

// lsdemo at 1.0-1, lsdemo-tools at 1.0-2 (a library upgraded without its
// -utils package): create --deb patches the packages at --version and
// names the others as skipped; without --version, both versions shipping
// code, it asks for one.
func TestDebVersionsInstalled(t *testing.T) {
	lsdemoPrecheck(t)
	l := lsdemoPackage(t)
	l.install(t, l.deb(t, "lsdemo", "1.0-1"), l.deb(t, "lsdemo-tools", "1.0-2"))
	caseDir, _ := filepath.Abs("testdata/debpkg")
	work := t.TempDir()
	upd := filepath.Join(work, "fix.lsu")

	r := l.repo.run(t, "create", "--deb", "lsdemo", "-o", upd, filepath.Join(caseDir, "fix.patch"))
	if r.exit == 0 || !strings.Contains(r.stderr, "--version") || !strings.Contains(r.stderr, "1.0-1 (lsdemo") || !strings.Contains(r.stderr, "1.0-2 (lsdemo-tools") {
		t.Fatalf("create without --version, two versions shipping code: exit %d, stderr %q: want a refusal naming both and --version", r.exit, r.stderr)
	}
	r = l.repo.run(t, "create", "--deb", "lsdemo", "--version", "1.0-1", "-o", upd, filepath.Join(caseDir, "fix.patch"))
	if r.exit != 0 {
		t.Fatalf("create --version 1.0-1: exit %d, stderr %q", r.exit, r.stderr)
	}
	if !strings.Contains(r.stderr, "skipped lsdemo-tools") || !strings.Contains(r.stderr, "1.0-2") {
		t.Fatalf("create --version 1.0-1: stderr %q does not name lsdemo-tools 1.0-2 as skipped", r.stderr)
	}
	wantLsdemoTarget(t, readUpdate(t, upd))
}

// create --deb --to 1.0-3 --split: one update per patch 1.0-3 adds, in
// series order; scale.patch (a new initial value) cannot be made and is
// reported by name, and does not hold back twice.patch, which requires
// fix.patch's update. info names each one's Debian patch and CVE ids;
// apply --all of the two, in order, patches a running program.
func TestDebSplit(t *testing.T) {
	lsdemoPrecheck(t)
	l := lsdemoPackage(t)
	l.install(t, l.debs["1.0-1"]...)
	work := t.TempDir()
	dir := filepath.Join(work, "updates")
	r := l.repo.run(t, "create", "--deb", "lsdemo", "--to", "1.0-3", "--split", "-o", dir)
	fixID, twiceID := "lsdemo-1.0-3-fix", "lsdemo-1.0-3-twice"
	want := []string{
		"made " + filepath.Join(dir, fixID+".lsu") + ": debian/patches/fix.patch (CVE-2026-0001)",
		"not made: debian/patches/scale.patch: ",
		"made " + filepath.Join(dir, twiceID+".lsu") + ": debian/patches/twice.patch (CVE-2026-0003), requires " + fixID,
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.exit == 0 || len(lines) != len(want) || !strings.Contains(r.stderr, "1 of 3 patches not made: scale.patch") {
		t.Fatalf("create --split: exit %d, stdout %q, stderr %q: want a line per patch and a failure naming scale.patch", r.exit, r.stdout, r.stderr)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Fatalf("create --split line %d: %q, want %q...", i+1, lines[i], w)
		}
	}
	if !strings.Contains(lines[1], "initial value") {
		t.Fatalf("scale.patch's reason %q does not say that a global's initial value changes", lines[1])
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Fatalf("%d files in %s, want the 2 updates made", len(ents), dir)
	}
	fix, twice := readUpdate(t, filepath.Join(dir, fixID+".lsu")), readUpdate(t, filepath.Join(dir, twiceID+".lsu"))
	wantLsdemoTarget(t, fix)
	if d := twice.Debian; d == nil || d.Patch != "twice.patch" || d.Source != "lsdemo" || d.From != "1.0-1" || d.To != "1.0-3" ||
		strings.Join(d.CVEs, " ") != "CVE-2026-0003" || strings.Join(twice.Requires, " ") != fixID {
		t.Fatalf("twice.patch's update: debian %+v, requires %v", d, twice.Requires)
	}
	info := mustRun(t, "info", filepath.Join(dir, twiceID+".lsu")).stdout
	for _, w := range []string{"requires: " + fixID, "debian:  source package lsdemo 1.0-1 -> 1.0-3", "patch: debian/patches/twice.patch", "CVEs:  CVE-2026-0003"} {
		if !strings.Contains(info, w) {
			t.Fatalf("info does not say %q:\n%s", w, info)
		}
	}
	infoJSON := mustRun(t, "info", "--json", filepath.Join(dir, fixID+".lsu")).stdout
	if !strings.Contains(infoJSON, `"patch": "fix.patch"`) || !strings.Contains(infoJSON, `"CVE-2026-0001"`) {
		t.Fatalf("info --json names no Debian patch or CVE:\n%s", infoJSON)
	}

	p := start(t, work, lsdemoServer)
	if got := p.query("500"); got != "high 1000" {
		t.Fatalf("before apply: 500 is %q", got)
	}
	if r := run(t, "apply", "--all", filepath.Join(dir, twiceID+".lsu")); r.exit == 0 {
		t.Fatalf("apply --all of twice.patch's update before fix.patch's: exit 0, stdout %q", r.stdout)
	}
	for _, u := range []string{fixID, twiceID} {
		if r := run(t, "apply", "--all", filepath.Join(dir, u+".lsu")); r.exit != 0 || strings.TrimSpace(r.stdout) != "patched 1, skipped 0, failed 0" {
			t.Fatalf("apply --all %s: exit %d, stdout %q, stderr %q", u, r.exit, r.stdout, r.stderr)
		}
	}
	if got := p.query("500"); got != "low 1500" {
		t.Fatalf("after both updates: 500 is %q, want low 1500", got)
	}
	mustRun(t, "undo", "--all", twiceID)
	mustRun(t, "undo", "--all", fixID)
	if got := p.query("500"); got != "high 1000" {
		t.Fatalf("after undo: 500 is %q, want high 1000", got)
	}
}

// create --deb builds in a clean environment, as Debian's build daemons
// do: a python3, cc and gcc that come first on the caller's PATH (a
// version manager, /usr/local) and that fail are not used; lsdemo's build
// runs python3 and cc.
func TestDebCleanEnv(t *testing.T) {
	lsdemoPrecheck(t)
	l := lsdemoPackage(t)
	l.install(t, l.debs["1.0-1"]...)
	work := t.TempDir()
	poison := filepath.Join(work, "poison")
	if err := os.Mkdir(poison, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"python3", "cc", "gcc"} {
		script := "#!/bin/sh\necho \"poisoned $0 run by the build\" >&2\nexit 1\n"
		if err := os.WriteFile(filepath.Join(poison, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	upd := filepath.Join(work, "to.lsu")
	env := []string{"PATH=" + poison + ":" + os.Getenv("PATH"), "PYTHONPATH=" + poison, "LC_ALL=C"}
	r := l.repo.runEnv(t, env, "create", "--deb", "lsdemo", "--to", "1.0-2", "-o", upd)
	if r.exit != 0 {
		t.Fatalf("create --deb with a poisoned python3/cc/gcc first on PATH: exit %d, stdout %q, stderr %q", r.exit, r.stdout, r.stderr)
	}
	wantLsdemoTarget(t, readUpdate(t, upd))
}
