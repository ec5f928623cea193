package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The entry redirections of hard functions (aliases, loops back into the
// entry, short functions with padding only before them) and thread-local
// variables no replaced function reaches, in the single-process path and
// with --all, optimised and not, PIE and not.
var spliceCases = []string{"cxx_alias", "loop_head", "short_before", "tls_unused"}

var spliceVariants = []struct{ name, build string }{
	{"O2", ""},
	{"O0", "CFLAGS='-O0 -g' CXXFLAGS='-O0 -g'"},
	{"O2nopie", "CFLAGS='-O2 -g -fno-pie' CXXFLAGS='-O2 -g -fno-pie' LDFLAGS=-no-pie"},
	{"O0nopie", "CFLAGS='-O0 -g -fno-pie' CXXFLAGS='-O0 -g -fno-pie' LDFLAGS=-no-pie"},
}

func TestSpliceVariants(t *testing.T) {
	slow(t)
	for _, name := range spliceCases {
		for _, v := range spliceVariants[1:] { // O2: TestCases
			t.Run(name+"/"+v.name, func(t *testing.T) {
				if os.Getuid() != 0 {
					t.Skip("needs root or ptrace of own processes")
				}
				runCase(t, name, v.build)
			})
		}
	}
}

func TestSpliceAll(t *testing.T) {
	slow(t)
	for _, name := range spliceCases {
		for _, v := range spliceVariants {
			t.Run(name+"/"+v.name, func(t *testing.T) {
				if os.Getuid() != 0 {
					t.Skip("needs root or ptrace of own processes")
				}
				runCaseAll(t, name, v.name, v.build)
			})
		}
	}
}

// runCaseAll runs a case's steps through apply --all and undo --all. Its
// program has a name no other test's has, and its update an id of its
// own, so --all reaches only the process this test started.
func runCaseAll(t *testing.T, name, variant, build string) {
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
	if len(c.Program) == 0 || c.Program[0] == "./prog" {
		t.Fatalf("%s: --all needs a program name of the case's own", name)
	}
	c.Build = strings.TrimSpace("make " + build)
	work := t.TempDir()
	src, run0 := filepath.Join(work, "src"), filepath.Join(work, "run")
	os.Mkdir(src, 0o755)
	os.Mkdir(run0, 0o755)
	copyTree(t, filepath.Join(caseDir, "src"), src)
	copyTree(t, src, run0)
	sh(t, run0, c.Build)
	ids, files := map[string]string{}, map[string]string{}
	for _, u := range c.Updates {
		if u.ExitCode != 0 {
			continue
		}
		id := "splice-all-" + name + "-" + variant + "-" + u.ID
		ids[u.ID], files[u.ID] = id, filepath.Join(work, u.ID+".lsu")
		mustRun(t, "create", "--src", src, "--build", c.Build, "--id", id, "-o", files[u.ID], filepath.Join(caseDir, u.Patch))
	}
	p := start(t, run0, c.Program...)
	for i, s := range c.Steps {
		switch {
		case s.Query != "":
			if got := p.query(s.Query); got != s.Want {
				t.Fatalf("step %d: query %q: got %q, want %q", i, s.Query, got, s.Want)
			}
		case s.Apply != "" && s.ExitCode == 0:
			r := mustRun(t, "apply", "--all", files[s.Apply])
			if strings.TrimSpace(r.stdout) != "patched 1, skipped 0, failed 0" {
				t.Fatalf("step %d: apply --all: %q %q", i, r.stdout, r.stderr)
			}
		case s.Undo != "" && s.ExitCode == 0:
			r := mustRun(t, "undo", "--all", ids[s.Undo])
			if strings.TrimSpace(r.stdout) != "unpatched 1, skipped 0, failed 0" {
				t.Fatalf("step %d: undo --all: %q %q", i, r.stdout, r.stderr)
			}
		case s.Apply != "" || s.Undo != "":
			t.Fatalf("step %d: a refused step has no --all form here", i)
		}
		p.alive()
	}
}

// A livesplice killed between writing the entries and the flag (or, in
// undo, between clearing the flag and restoring the entries) leaves the
// gates' old path running: for loop_head, whose loop branches back into
// the bytes the entry jump covers, and for short_before, entered through
// padding before it, the old code must still work, and the next command
// recovers.
func TestCrashSplicedEntries(t *testing.T) {
	slow(t)
	if os.Getuid() != 0 {
		t.Skip("needs root or ptrace of own processes")
	}
	for _, c := range []struct{ name, query, old, new string }{
		{"loop_head", "abba", "a=2", "a=4"},
		{"short_before", "-5", "clamp=-5", "clamp=0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			caseDir, _ := filepath.Abs(filepath.Join("testdata", c.name))
			work := t.TempDir()
			src, runDir := filepath.Join(work, "src"), filepath.Join(work, "run")
			sh(t, work, "mkdir src run")
			copyTree(t, filepath.Join(caseDir, "src"), src)
			copyTree(t, src, runDir)
			sh(t, runDir, "make -s")
			upd := filepath.Join(work, "fix.lsu")
			mustRun(t, "create", "--src", src, "-o", upd, filepath.Join(caseDir, "fix.patch"))
			p := start(t, runDir, "./"+c.name)
			for _, pt := range []string{"apply:entry", "undo:flipped"} {
				if strings.HasPrefix(pt, "undo") {
					mustRun(t, "apply", "--pid", p.pid(), upd)
					killedAt(t, pt, "undo", "--pid", p.pid(), "fix")
				} else {
					killedAt(t, pt, "apply", "--pid", p.pid(), upd)
				}
				// The entries jump to the gates, the flag is clear.
				for i := 0; i < 3; i++ {
					if got := p.query(c.query); got != c.old {
						t.Fatalf("killed at %s: %q, want %q", pt, got, c.old)
					}
				}
				r := run(t, "apply", "--pid", p.pid(), upd)
				if r.exit != 0 && r.exit != 6 {
					t.Fatalf("killed at %s: follow-up apply: exit %d: %s", pt, r.exit, r.stderr)
				}
				if got := p.query(c.query); got != c.new {
					t.Fatalf("killed at %s: after follow-up apply: %q", pt, got)
				}
				mustRun(t, "undo", "--pid", p.pid(), "fix")
				if got := p.query(c.query); got != c.old {
					t.Fatalf("killed at %s: after follow-up undo: %q", pt, got)
				}
			}
			p.alive()
		})
	}
}
