package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestLibcareSuite runs libcare's test cases (github.com/cloudlinux/libcare,
// tests/: a looping program, its diff, plain -O0) through livesplice:
// build, start, create from the unpatched tree with the case's diff,
// apply, check the output libcare's run_tests.sh expects, undo, check
// again. It is not part of `make test`: set LIVESPLICE_LIBCARE to a git
// directory of libcare (the fetched snapshot). Nothing of libcare is kept
// in this tree; the cases are read from that directory at run time.
//
//	LIVESPLICE_LIBCARE=/path/to/libcare/.git go test -count=1 -run TestLibcareSuite -v ./e2e/
//
// The checks follow run_tests.sh: a "patch" check per case (flavor
// test_patch_files; the fail_* cases must stay unpatched, their threads
// never leave the function) and an "undo" check per case but the six
// busy fail_* ones (test_unpatch_files; fail_unpatch must stay patched),
// patchlevel's two levels in its own check: 37 in all.
func TestLibcareSuite(t *testing.T) {
	gitDir := os.Getenv("LIVESPLICE_LIBCARE")
	if gitDir == "" {
		t.Skip("set LIVESPLICE_LIBCARE to a libcare git directory")
	}
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	work := t.TempDir()
	tests := filepath.Join(work, "lc")
	os.Mkdir(tests, 0o755)
	sh(t, work, fmt.Sprintf("git --git-dir=%q archive HEAD tests | tar -x -C %q", gitDir, tests))
	tests = filepath.Join(tests, "tests")
	sh(t, tests, "gcc -fPIC -shared -o fastsleep.so fastsleep.c -ldl")
	descs, _ := filepath.Glob(filepath.Join(tests, "*/desc"))
	var names []string
	only := map[string]bool{} // LIVESPLICE_LIBCARE_CASES: a comma-separated subset
	for _, n := range strings.Split(os.Getenv("LIVESPLICE_LIBCARE_CASES"), ",") {
		if n != "" {
			only[n] = true
		}
	}
	for _, d := range descs {
		if n := filepath.Base(filepath.Dir(d)); len(only) == 0 || only[n] {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var rows []string
	pass, total := 0, 0
	add := func(name, check string, ok bool, why string) {
		total++
		res := "FAIL"
		if ok {
			res = "pass"
			pass++
		}
		rows = append(rows, fmt.Sprintf("%-20s %-6s %-4s %s", name, check, res, why))
	}
	for _, name := range names {
		c := &lcCase{t: t, name: name, tests: tests, work: filepath.Join(work, name)}
		c.run(add)
	}
	if len(only) == 0 || only["patchlevel"] {
		(&lcCase{t: t, name: "patchlevel", tests: tests, work: filepath.Join(work, "patchlevel")}).patchlevel(add)
	}
	fmt.Printf("%-20s %-6s %-4s %s\n", "case", "check", "res", "reason")
	for _, r := range rows {
		fmt.Println(r)
	}
	fmt.Printf("%d of %d checks pass\n", pass, total)
}

type lcCase struct {
	t                 *testing.T
	name, tests, work string
}

// busy are the cases whose thread never leaves the patched function: the
// update must be refused (run_tests.sh skips their unpatch check).
var lcBusy = map[string]bool{"fail_busy_threads": true, "fail_busy_single": true, "fail_busy_single_top": true,
	"fail_coro": true, "fail_threading": true, "fail_coro_listed": true}

// makefile writes our own build of a case (libcare's makefiles drive its
// kpatch tools): the binary from NAME.c, lib NAME.so from libNAME.c, plain
// -O0 as libcare builds them, with the case's LDLIBS and LDFLAGS.
func (c *lcCase) makefile(dir string) {
	mk, _ := os.ReadFile(filepath.Join(dir, "Makefile"))
	var ldlibs, ldflags string
	for _, l := range strings.Split(string(mk), "\n") {
		if m := regexp.MustCompile(`^LDLIBS\s*:?=\s*(.*)$`).FindStringSubmatch(l); m != nil {
			ldlibs = m[1]
		}
		if m := regexp.MustCompile(`^LDFLAGS\s*\+=\s*(.*)$`).FindStringSubmatch(l); m != nil {
			ldflags = m[1]
		}
	}
	var b strings.Builder
	n := c.name
	fmt.Fprintf(&b, "CFLAGS ?=\nall:")
	lib := lcFileExists(filepath.Join(dir, "lib"+n+".c"))
	if lib {
		fmt.Fprintf(&b, " lib%s.so", n)
	}
	fmt.Fprintf(&b, " %s\n", n)
	if lib {
		fmt.Fprintf(&b, "lib%s.so: lib%s.c\n\t$(CC) $(CFLAGS) -fPIC -shared -o $@ lib%s.c\n", n, n, n)
		fmt.Fprintf(&b, "%s: %s.c lib%s.so\n\t$(CC) $(CFLAGS) %s -o $@ %s.c -L. -l%s %s\n", n, n, n, ldflags, n, n, ldlibs)
	} else {
		fmt.Fprintf(&b, "%s: %s.c\n\t$(CC) $(CFLAGS) %s -o $@ %s.c %s\n", n, n, ldflags, n, ldlibs)
	}
	os.WriteFile(filepath.Join(dir, "Makefile"), []byte(b.String()), 0o644)
}

func lcFileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// prepare copies the case to work/DIR with our makefile and builds it if
// build is set.
func (c *lcCase) prepare(dir string, build bool) (string, error) {
	d := filepath.Join(c.work, dir)
	os.MkdirAll(d, 0o755)
	copyTree(c.t, filepath.Join(c.tests, c.name), d)
	c.makefile(d)
	// A case that includes another case's source by a relative path gets
	// a copy of it beside its own (create copies the tree alone).
	srcs, _ := filepath.Glob(filepath.Join(d, "*.c"))
	for _, f := range srcs {
		b, _ := os.ReadFile(f)
		for _, m := range regexp.MustCompile(`#include "\.\./([a-z_]+)/([a-z_]+\.c)"`).FindAllSubmatch(b, -1) {
			other, _ := os.ReadFile(filepath.Join(c.tests, string(m[1]), string(m[2])))
			os.WriteFile(filepath.Join(d, string(m[2])), other, 0o644)
			b = bytes.ReplaceAll(b, m[0], []byte(`#include "`+string(m[2])+`"`))
		}
		os.WriteFile(f, b, 0o644)
	}
	if build {
		cmd := exec.Command("make", "-s")
		cmd.Dir = d
		if out, err := cmd.CombinedOutput(); err != nil {
			return d, fmt.Errorf("make: %v: %s", err, lcFirstLine(string(out)))
		}
	}
	return d, nil
}

// patch concatenates the case's diffs with extension ext (binary's, library's).
func (c *lcCase) patch(ext string) string {
	var all []byte
	for _, f := range []string{c.name + "." + ext, "lib" + c.name + "." + ext} {
		if b, err := os.ReadFile(filepath.Join(c.tests, c.name, f)); err == nil {
			all = append(all, b...)
		}
	}
	p := filepath.Join(c.work, "fix."+ext)
	os.WriteFile(p, all, 0o644)
	return p
}

// lcProc is a started case program writing to a file.
type lcProc struct {
	cmd *exec.Cmd
	out string
}

func (c *lcCase) start(dir string) *lcProc {
	out := filepath.Join(c.work, "out")
	f, err := os.Create(out)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command("stdbuf", "-o0", "./"+c.name)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+dir, "LD_PRELOAD="+filepath.Join(c.tests, "fastsleep.so"))
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	f.Close()
	p := &lcProc{cmd: cmd, out: out}
	c.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() }) // only this process, by pid
	p.waitLines(2)
	return p
}

func (p *lcProc) lines() []string {
	b, _ := os.ReadFile(p.out)
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

// waitLines waits for n more lines of output (at most 20 s: a corpus
// runner, not a test of speed).
func (p *lcProc) waitLines(n int) {
	start := len(p.lines())
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if len(p.lines()) >= start+n {
			return
		}
	}
}

// tail is the last n lines, lower-cased (run_tests.sh greps -i).
func (p *lcProc) tail(n int) string {
	l := p.lines()
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.ToLower(strings.Join(l, "\n"))
}

var wordPatched = regexp.MustCompile(`(^|[^a-z0-9_])patched`)

// patched is run_tests.sh's check_result for the case.
func (c *lcCase) patched(p *lcProc) bool {
	switch {
	case c.name == "simplest":
		return !strings.Contains(p.tail(2), "unpatched")
	case c.name == "fail_unpatch":
		return wordPatched.MatchString(p.tail(2))
	case strings.HasPrefix(c.name, "fail_"):
		return !strings.Contains(p.tail(2), "unpatched") // "patched" here means the update took
	case c.name == "ref_orig_threads":
		t := p.tail(3)
		return strings.Contains(t, "thread2 (patched)") && strings.Contains(t, "thread1 (unpatched)")
	case c.name == "both":
		t := p.tail(2)
		return regexp.MustCompile(`(^|[^a-z])patched shared library`).MatchString(t) && regexp.MustCompile(`(^|[^a-z])patched binary`).MatchString(t)
	}
	return wordPatched.MatchString(p.tail(2))
}

func lcFirstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}

func (c *lcCase) run(add func(name, check string, ok bool, why string)) {
	os.MkdirAll(c.work, 0o755)
	src, _ := c.prepare("src", false)
	runDir, err := c.prepare("run", true)
	if err != nil {
		add(c.name, "patch", false, err.Error())
		return
	}
	upd := filepath.Join(c.work, "fix.lsu")
	id := "libcare-" + strings.ReplaceAll(c.name, "_", "-")
	busy := lcBusy[c.name]
	cr := run(c.t, "create", "--src", src, "--id", id, "-o", upd, c.patch("diff"))
	if cr.exit != 0 {
		add(c.name, "patch", false, "create: "+lcFirstLine(cr.stderr))
		if !busy {
			add(c.name, "undo", false, "no update")
		}
		return
	}
	p := c.start(runDir)
	ar := run(c.t, "apply", "--pid", fmt.Sprint(p.cmd.Process.Pid), upd)
	p.waitLines(3)
	got := c.patched(p)
	why := "applied"
	if ar.exit != 0 {
		why = fmt.Sprintf("apply exit %d: %s", ar.exit, lcFirstLine(ar.stderr))
	}
	if busy {
		add(c.name, "patch", !got && ar.exit != 0, why)
		return
	}
	if got {
		add(c.name, "patch", true, why)
	} else {
		add(c.name, "patch", false, why+"; output: "+lcFirstLine(p.tail(1)))
	}
	if ar.exit != 0 {
		add(c.name, "undo", false, "not applied")
		return
	}
	ur := run(c.t, "undo", "--pid", fmt.Sprint(p.cmd.Process.Pid), id)
	p.waitLines(3)
	after := c.patched(p)
	why = "undone"
	if ur.exit != 0 {
		why = fmt.Sprintf("undo exit %d: %s", ur.exit, lcFirstLine(ur.stderr))
	}
	if c.name == "fail_unpatch" {
		// The new print_greetings calls a function that never returns:
		// undo must refuse, the program stays patched.
		add(c.name, "undo", after && ur.exit != 0, why)
		return
	}
	add(c.name, "undo", got && !after && ur.exit == 0, why)
}

// patchlevel: level 1 (diff: SEMIPATCHED) then level 2 (diff2: PATCHED)
// on top of it, as an update built on the first (--requires), then both undone.
func (c *lcCase) patchlevel(add func(name, check string, ok bool, why string)) {
	os.MkdirAll(c.work, 0o755)
	src, _ := c.prepare("src", false)
	runDir, err := c.prepare("run", true)
	if err != nil {
		add(c.name, "levels", false, err.Error())
		return
	}
	l2, _ := c.prepare("l2", false)
	p1, p2src := c.patch("diff"), c.patch("diff2")
	sh(c.t, l2, "patch -s -p1 < "+p2src)
	u1, u2 := filepath.Join(c.work, "l1.lsu"), filepath.Join(c.work, "l2.lsu")
	fail := func(why string) { add(c.name, "levels", false, why) }
	if r := run(c.t, "create", "--src", src, "--id", "libcare-patchlevel-1", "-o", u1, p1); r.exit != 0 {
		fail("create level 1: " + lcFirstLine(r.stderr))
		return
	}
	sh(c.t, src, "patch -s -p1 < "+p1)
	var diff bytes.Buffer
	for _, f := range []string{c.name + ".c", "lib" + c.name + ".c"} {
		out, _ := exec.Command("diff", "-u", "--label", "a/"+f, "--label", "b/"+f, filepath.Join(src, f), filepath.Join(l2, f)).Output()
		diff.Write(out)
	}
	p12 := filepath.Join(c.work, "l1-to-l2.diff")
	os.WriteFile(p12, diff.Bytes(), 0o644)
	if r := run(c.t, "create", "--src", src, "--id", "libcare-patchlevel-2", "--requires", "libcare-patchlevel-1", "-o", u2, p12); r.exit != 0 {
		fail("create level 2: " + lcFirstLine(r.stderr))
		return
	}
	p := c.start(runDir)
	pid := fmt.Sprint(p.cmd.Process.Pid)
	if r := run(c.t, "apply", "--pid", pid, u1); r.exit != 0 {
		fail("apply level 1: " + lcFirstLine(r.stderr))
		return
	}
	p.waitLines(3)
	if !strings.Contains(p.tail(2), "semipatched") {
		fail("level 1 output: " + lcFirstLine(p.tail(1)))
		return
	}
	if r := run(c.t, "apply", "--pid", pid, u2); r.exit != 0 {
		fail("apply level 2: " + lcFirstLine(r.stderr))
		return
	}
	p.waitLines(3)
	if t := p.tail(2); strings.Contains(t, "semipatched") || !wordPatched.MatchString(t) {
		fail("level 2 output: " + lcFirstLine(p.tail(1)))
		return
	}
	for _, id := range []string{"libcare-patchlevel-2", "libcare-patchlevel-1"} {
		if r := run(c.t, "undo", "--pid", pid, id); r.exit != 0 {
			fail("undo " + id + ": " + lcFirstLine(r.stderr))
			return
		}
	}
	p.waitLines(3)
	if !strings.Contains(p.tail(2), "unpatched") {
		fail("after undo: " + lcFirstLine(p.tail(1)))
		return
	}
	add(c.name, "levels", true, "level 1, level 2 on it, both undone")
}
