// Package e2e drives the livesplice binary end to end: C programs under
// testdata/ are built with the machine's gcc, started, patched live from
// their fix.patch, checked, and unpatched. Tests attach only to processes
// they started and stop only those, by pid.
package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var livesplice string // path of the binary under test

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "livesplice-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	livesplice = filepath.Join(dir, "livesplice")
	out, err := exec.Command("go", "build", "-o", livesplice, "../cmd/livesplice").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build livesplice: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is one livesplice invocation.
type result struct {
	stdout, stderr string
	exit           int
}

func run(t testing.TB, args ...string) result {
	t.Helper()
	cmd := exec.Command(livesplice, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	r := result{stdout: o.String(), stderr: e.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.exit = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run livesplice %v: %v", args, err)
	}
	return r
}

func mustRun(t testing.TB, args ...string) result {
	t.Helper()
	r := run(t, args...)
	if r.exit != 0 {
		t.Fatalf("livesplice %s: exit %d: %s", strings.Join(args, " "), r.exit, r.stderr)
	}
	return r
}

// copyTree copies a case's source (everything but case.json and patches).
func copyTree(t testing.TB, from, to string) {
	t.Helper()
	out, err := exec.Command("cp", "-a", from+"/.", to).CombinedOutput()
	if err != nil {
		t.Fatalf("copy %s: %v %s", from, err, out)
	}
}

func sh(t testing.TB, dir, command string) {
	t.Helper()
	cmd := exec.Command("sh", "-c", command)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s in %s: %v\n%s", command, dir, err, out)
	}
}

// prog is a started test program that answers one line per query line.
type prog struct {
	t     testing.TB
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
}

func start(t testing.TB, dir string, argv ...string) *prog {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	p := &prog{t: t, cmd: cmd, in: in, lines: make(chan string, 1024)}
	go func() {
		sc := bufio.NewScanner(outp)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill() // only the process this test started, by pid
		cmd.Wait()
	})
	return p
}

func (p *prog) pid() string { return fmt.Sprint(p.cmd.Process.Pid) }

// line waits for the next output line.
func (p *prog) line() string {
	p.t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			p.t.Fatalf("program %s exited: %v", p.pid(), p.cmd.Wait())
		}
		return l
	case <-time.After(20 * time.Second):
		p.t.Fatalf("program %s: no output", p.pid())
	}
	return ""
}

// query sends one line and returns the answer.
func (p *prog) query(q string) string {
	p.t.Helper()
	if _, err := io.WriteString(p.in, q+"\n"); err != nil {
		p.t.Fatalf("write to program: %v", err)
	}
	return p.line()
}

// alive fails the test if the program died.
func (p *prog) alive() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(os.Signal(nil)); err == nil {
		return
	}
	if p.cmd.ProcessState != nil {
		p.t.Fatalf("program exited: %v", p.cmd.ProcessState)
	}
}

// mappings lists a process's mappings, without those that change on their
// own (heap, stack) and livesplice's state record. A case that expects a
// refused apply should not have threads that map memory meanwhile.
func mappings(t testing.TB, pid string) string {
	t.Helper()
	data, err := os.ReadFile("/proc/" + pid + "/maps")
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasSuffix(l, "[heap]") || strings.HasSuffix(l, "[stack]") || strings.Contains(l, "/memfd:livesplice-state") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}

// caseSpec is a case's case.json.
type caseSpec struct {
	// Source: the program's tree, relative to the case (default src);
	// cases that differ only in their patches or steps share one.
	Source  string   `json:"source"`
	Build   string   `json:"build"`   // ordinary build (default make)
	Program []string `json:"program"` // argv, relative to the tree
	Env     []string `json:"env"`
	Updates []struct {
		ID    string `json:"id"`
		Patch string `json:"patch"`
		// Src: create from a copy of this directory of the case instead
		// of the case's src (which then stays unpatched): an update for
		// another version of the program.
		Src string `json:"src"`
		// Requires: ids given to create --requires.
		Requires []string `json:"requires"`
		// ExitCode and Contains: create must refuse this patch.
		ExitCode int    `json:"exit"`
		Contains string `json:"contains"`
	} `json:"updates"`
	Steps []step `json:"steps"`
}

type step struct {
	Query string    `json:"query"`
	Want  string    `json:"want"`
	Apply string    `json:"apply"`
	Undo  string    `json:"undo"`
	Show  *[]string `json:"show"`
	// Log: run the apply with -v; its report must contain this (how an
	// entry was redirected, say).
	Log      string `json:"log"`
	ExitCode int    `json:"exit"`
	Contains string `json:"contains"`
}

// runCase runs a data-driven case from testdata/NAME.
func runCase(t *testing.T, name string, extraBuild string) {
	caseDir, _ := filepath.Abs(filepath.Join("testdata", name))
	data, err := os.ReadFile(filepath.Join(caseDir, "case.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c caseSpec
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("%s/case.json: %v", name, err)
	}
	if c.Build == "" {
		c.Build = "make"
	}
	if extraBuild != "" {
		c.Build += " " + extraBuild
	}
	work := t.TempDir()
	src := filepath.Join(work, "src")
	os.Mkdir(src, 0o755)
	if c.Source == "" {
		c.Source = "src"
	}
	copyTree(t, filepath.Join(caseDir, c.Source), src)
	// The running program: the project's ordinary build.
	run0 := filepath.Join(work, "run")
	os.Mkdir(run0, 0o755)
	copyTree(t, src, run0)
	sh(t, run0, c.Build)
	// Updates: each created from the tree with the earlier ones applied.
	files := map[string]string{}
	for _, u := range c.Updates {
		out := filepath.Join(work, u.ID+".lsu")
		patch := filepath.Join(caseDir, u.Patch)
		from := src
		if u.Src != "" {
			from = filepath.Join(work, "src-"+u.ID)
			os.Mkdir(from, 0o755)
			copyTree(t, filepath.Join(caseDir, u.Src), from)
		}
		argv := []string{"create", "--src", from, "--build", c.Build, "--id", u.ID, "-o", out}
		for _, q := range u.Requires {
			argv = append(argv, "--requires", q)
		}
		r := run(t, append(argv, patch)...)
		if u.ExitCode != 0 {
			if r.exit != u.ExitCode || !strings.Contains(r.stderr, u.Contains) {
				t.Fatalf("create %s: want exit %d and %q, got exit %d: %s", u.ID, u.ExitCode, u.Contains, r.exit, r.stderr)
			}
			if strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Errorf("create %s: refusal is not one line: %q", u.ID, r.stderr)
			}
			continue
		}
		if r.exit != 0 {
			t.Fatalf("create %s: exit %d: %s", u.ID, r.exit, r.stderr)
		}
		files[u.ID] = out
		sh(t, from, "patch -s -p1 < "+patch)
	}
	if len(c.Steps) == 0 {
		return
	}
	argv := append([]string{}, c.Program...)
	if len(argv) == 0 {
		argv = []string{"./prog"}
	}
	p := start(t, run0, argv...)
	for i, s := range c.Steps {
		var r result
		switch {
		case s.Query != "":
			got := p.query(s.Query)
			if got != s.Want {
				t.Fatalf("step %d: query %q: got %q, want %q", i, s.Query, got, s.Want)
			}
			continue
		case s.Apply != "":
			f := files[s.Apply]
			if f == "" {
				f = filepath.Join(caseDir, s.Apply)
			}
			before := mappings(t, p.pid())
			if s.Log != "" {
				r = run(t, "apply", "-v", "--pid", p.pid(), f)
				if !strings.Contains(r.stderr, s.Log) {
					t.Fatalf("step %d: apply -v: want %q in its report: %s", i, s.Log, r.stderr)
				}
			} else {
				r = run(t, "apply", "--pid", p.pid(), f)
			}
			if r.exit != 0 {
				// A refused apply leaves no memory behind (the state
				// record, once made, stays by design).
				if after := mappings(t, p.pid()); after != before {
					t.Fatalf("step %d: refused apply changed the mappings:\nbefore:\n%s\nafter:\n%s", i, before, after)
				}
			}
		case s.Undo != "":
			r = run(t, "undo", "--pid", p.pid(), s.Undo)
		case s.Show != nil:
			r = run(t, "show", "--pid", p.pid(), "--json")
			var sj struct {
				Updates []struct{ ID string } `json:"updates"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &sj); err != nil {
				t.Fatalf("step %d: show --json: %v: %q", i, err, r.stdout)
			}
			var ids []string
			for _, u := range sj.Updates {
				ids = append(ids, u.ID)
			}
			if strings.Join(ids, ",") != strings.Join(*s.Show, ",") {
				t.Fatalf("step %d: show: got %v, want %v", i, ids, *s.Show)
			}
		}
		if r.exit != s.ExitCode || (s.Contains != "" && !strings.Contains(r.stderr, s.Contains)) {
			t.Fatalf("step %d: want exit %d %q; got exit %d: %s", i, s.ExitCode, s.Contains, r.exit, r.stderr)
		}
		if r.exit == 0 && r.stdout != "" && s.Show == nil {
			t.Errorf("step %d: not quiet on success: %q", i, r.stdout)
		}
		p.alive()
	}
}

// slow skips a test under -short (make check): the crash sweeps, the
// hostile and fleet runs, the compiler variants; make test runs them all.
func slow(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: a slow end-to-end test (make test runs it)")
	}
}

// shortCases are the cases TestCases runs under -short (make check): one
// of each mechanism, a few seconds each.
var shortCases = map[string]bool{
	"basic": true, "shlib": true, "tls": true, "stacked": true, "hidden": true, "ipa_ra": true,
	"rodata_source": true, "short_before": true, "loop_head": true, "cxx_alias": true,
	"hooks_only": true, "new_function": true, "split_lib": true,
}

// fleetCase lays out a case for an --all test in a work directory: the
// update's tree "src" (from the case's subdirectory trees["src"]) and the
// running programs' trees (every other key, built with make), then creates
// the update from "src" with patch under id, an id no other test uses (undo
// --all reaches every process holding it). It returns the work directory
// and the update file.
func fleetCase(t *testing.T, name string, trees map[string]string, patch, id string) (work, upd string) {
	t.Helper()
	caseDir, _ := filepath.Abs(filepath.Join("testdata", name))
	work = t.TempDir()
	for dst, from := range trees {
		os.MkdirAll(filepath.Join(work, dst), 0o755)
		copyTree(t, filepath.Join(caseDir, from), filepath.Join(work, dst))
		if dst != "src" {
			sh(t, filepath.Join(work, dst), "make -s")
		}
	}
	upd = filepath.Join(work, id+".lsu")
	mustRun(t, "create", "--src", filepath.Join(work, "src"), "--id", id, "-o", upd, filepath.Join(caseDir, patch))
	return work, upd
}
