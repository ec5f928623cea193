package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// rodataVariants are the builds the read-only data cases run in: -O2 and
// -O0 (string literals in one .rodata, not mergeable), PIE and not.
var rodataVariants = []struct{ name, build string }{
	{"O2", ""},
	{"O0", "CFLAGS='-O0 -g'"},
	{"O2-nopie", "CFLAGS='-O2 -g -fno-pie' LDFLAGS=-no-pie"},
	{"O0-nopie", "CFLAGS='-O0 -g -fno-pie' LDFLAGS=-no-pie"},
}

// TestRodataCases: rodata_moved (a string that only moved keeps its user
// out of the update) and rodata_source (an update built from a source
// whose strings or constant tables differ from the running program's is
// refused by run-pre matching) in every variant.
func TestRodataCases(t *testing.T) {
	slow(t)
	for _, name := range []string{"rodata_moved", "rodata_source"} {
		for _, v := range rodataVariants {
			t.Run(name+"/"+v.name, func(t *testing.T) {
				if os.Getuid() != 0 {
					t.Skip("needs root or ptrace of own processes")
				}
				runCase(t, name, v.build)
			})
		}
	}
}

// TestOnlyChanged: the update of rodata_moved replaces greet only, says
// why, and other (same code, its string moved in .rodata at -O0) is not in it.
func TestOnlyChanged(t *testing.T) {
	slow(t)
	caseDir, _ := filepath.Abs("testdata/rodata_moved")
	for _, v := range rodataVariants {
		t.Run(v.name, func(t *testing.T) {
			src := t.TempDir()
			copyTree(t, filepath.Join(caseDir, "src"), src)
			out := filepath.Join(t.TempDir(), "fix.lsu")
			mustRun(t, "create", "--src", src, "--build", strings.TrimSpace("make "+v.build), "--id", "fix", "-o", out, filepath.Join(caseDir, "fix.patch"))
			got := whyOf(t, out)
			if want := "replaced greet [{changed-source prog.c:9} {changed-data string \"Hello. PATCHED!\"}]"; strings.Join(got, ",") != want {
				t.Fatalf("functions %q, want %q", got, want)
			}
		})
	}
}

// whyOf lists "status name [reasons]" of every function of an update, sorted.
func whyOf(t *testing.T, file string) []string {
	t.Helper()
	var in struct {
		Targets []struct {
			Functions []struct {
				Name, Status string
				Why          []struct{ Kind, Detail string }
			}
		}
	}
	r := mustRun(t, "info", "--json", file)
	if err := json.Unmarshal([]byte(r.stdout), &in); err != nil {
		t.Fatalf("info --json: %v", err)
	}
	var got []string
	for _, tg := range in.Targets {
		for _, f := range tg.Functions {
			got = append(got, fmt.Sprintf("%s %s %v", f.Status, f.Name, f.Why))
		}
	}
	sort.Strings(got)
	return got
}

// TestWhyReasons: info says why: a changed static helper inlined into its
// callers, GCC clones of changed functions.
func TestWhyReasons(t *testing.T) {
	for name, want := range map[string]string{
		"inline_helper": "replaced area [{inlined clamp}],replaced border [{inlined clamp}]",
		"clones": "replaced check [{changed-source prog.c:80}],replaced lookup.part.0 [{changed-source prog.c:55} {clone lookup}]," +
			"replaced scale.constprop.0 [{changed-source prog.c:15} {clone scale}],replaced weight.isra.0 [{changed-source prog.c:32} {clone weight}]",
	} {
		t.Run(name, func(t *testing.T) {
			caseDir, _ := filepath.Abs(filepath.Join("testdata", name))
			src := t.TempDir()
			copyTree(t, filepath.Join(caseDir, "src"), src)
			out := filepath.Join(t.TempDir(), "fix.lsu")
			mustRun(t, "create", "--src", src, "--id", "fix", "-o", out, filepath.Join(caseDir, "fix.patch"))
			if got := strings.Join(whyOf(t, out), ","); got != want {
				t.Fatalf("got  %s\nwant %s", got, want)
			}
		})
	}
}

// TestRodataApplyAll: apply --all patches the process built from the
// update's source and refuses the one whose string differs, naming the
// function and the string. The binary's name is this test's alone.
func TestRodataApplyAll(t *testing.T) {
	slow(t)
	if os.Getuid() != 0 {
		t.Skip("needs root or ptrace of own processes")
	}
	work, upd := fleetCase(t, "rodata_source", map[string]string{"src": "src2", "run": "src2", "other": "src"}, "str.patch", "rodata-e2e-str")
	good := start(t, filepath.Join(work, "run"), "./rodata_e2e_target")
	odd := start(t, filepath.Join(work, "other"), "./rodata_e2e_target")
	if good.query("r 5") != "value is 5" || odd.query("r 5") != "VALUE IS 5" {
		t.Fatal("programs not running as built")
	}
	r := run(t, "apply", "--all", upd)
	if r.exit != 1 || strings.TrimSpace(r.stdout) != "patched 1, skipped 0, failed 1" {
		t.Fatalf("apply --all: exit %d, stdout %q, stderr %q", r.exit, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "pid "+odd.pid()+": failed") || !strings.Contains(r.stderr, `report: running code does not match the update's pre code: read-only data it uses differs: string "value is %d\n"`) {
		t.Fatalf("apply --all: the refused process is not named with its function and string: %q", r.stderr)
	}
	if got := good.query("r 5"); got != "value is 6" {
		t.Fatalf("patched process: %q", got)
	}
	if got := odd.query("r 5"); got != "VALUE IS 5" {
		t.Fatalf("refused process changed: %q", got)
	}
	mustRun(t, "undo", "--all", "rodata-e2e-str")
	if got := good.query("r 5"); got != "value is 5" {
		t.Fatalf("after undo --all: %q", got)
	}
}
