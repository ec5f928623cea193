package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLibcare runs test cases of cloudlinux/libcare (tests/NAME: a
// program that prints a greeting a second, a .diff per source file, and
// flags in its Makefile) with livesplice: the unpatched tree built plain
// as libcare builds it (-O0; a library, if the case has one, -fPIC
// -shared), an update created from the case's diffs, the program started,
// the update applied, the greeting checked to no longer say UNPATCHED
// (libcare's check), undone, and checked to say it again. LIVESPLICE_LIBCARE names a libcare git directory
// (the fetch tool's bare copy will do); LIVESPLICE_LIBCARE_CASES, a
// comma-separated list, overrides the cases (default: tls_simple,
// tls_shared and frame_finish). Nothing of libcare is copied here: the
// cases are read from that directory at test time.
func TestLibcare(t *testing.T) {
	gitDir := os.Getenv("LIVESPLICE_LIBCARE")
	if gitDir == "" {
		t.Skip("LIVESPLICE_LIBCARE (a libcare git directory) not set")
	}
	if os.Getuid() != 0 {
		t.Skip("needs root or ptrace of own processes")
	}
	if _, err := exec.LookPath("stdbuf"); err != nil {
		t.Skip("needs stdbuf (coreutils): the cases print without flushing")
	}
	cases := []string{"tls_simple", "tls_shared", "frame_finish"}
	if c := os.Getenv("LIVESPLICE_LIBCARE_CASES"); c != "" {
		cases = strings.Split(c, ",")
	}
	for _, name := range cases {
		t.Run(name, func(t *testing.T) { runLibcare(t, gitDir, name) })
	}
}

func gitShow(t *testing.T, gitDir, what string) string {
	t.Helper()
	out, err := exec.Command("git", "--git-dir", gitDir, "show", "HEAD:"+what).Output()
	if err != nil {
		t.Fatalf("git show %s: %v", what, err)
	}
	return string(out)
}

func runLibcare(t *testing.T, gitDir, name string) {
	work := t.TempDir()
	src := filepath.Join(work, "src")
	os.Mkdir(src, 0o755)
	files, err := exec.Command("git", "--git-dir", gitDir, "ls-tree", "--name-only", "HEAD:tests/"+name+"/").Output()
	if err != nil {
		t.Fatalf("libcare case %s: %v", name, err)
	}
	var patch strings.Builder
	var cflags []string
	lib := false
	for _, f := range strings.Fields(string(files)) {
		body := gitShow(t, gitDir, "tests/"+name+"/"+f)
		switch {
		case strings.HasSuffix(f, ".diff"):
			patch.WriteString(body)
		case f == "Makefile":
			// The case's own flags (CFLAGS += ...) and whether it has a
			// library; the rest of libcare's make machinery is its own.
			for _, l := range strings.Split(body, "\n") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(l), "CFLAGS +="); ok {
					cflags = append(cflags, strings.TrimSpace(v))
				}
				if strings.HasPrefix(strings.TrimSpace(l), "HAS_LIBRARY") {
					lib = true
				}
			}
		case strings.HasSuffix(f, ".c"):
			if err := os.WriteFile(filepath.Join(src, f), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	flags := strings.Join(cflags, " ")
	mk := fmt.Sprintf("CFLAGS ?= -g\nCFLAGS += %s\n", flags)
	if lib {
		mk += fmt.Sprintf("%[1]s: %[1]s.c lib%[1]s.so\n\t$(CC) $(CFLAGS) $(LDFLAGS) -o %[1]s %[1]s.c -L. -l%[1]s -Wl,-rpath,'$$ORIGIN'\n"+
			"lib%[1]s.so: lib%[1]s.c\n\t$(CC) $(CFLAGS) -fPIC -shared -o lib%[1]s.so lib%[1]s.c\n", name)
	} else {
		mk += fmt.Sprintf("%[1]s: %[1]s.c\n\t$(CC) $(CFLAGS) $(LDFLAGS) -o %[1]s %[1]s.c\n", name)
	}
	if err := os.WriteFile(filepath.Join(src, "Makefile"), []byte(mk), 0o644); err != nil {
		t.Fatal(err)
	}
	patchFile := filepath.Join(work, name+".diff")
	if err := os.WriteFile(patchFile, []byte(patch.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	run0 := filepath.Join(work, "run")
	os.Mkdir(run0, 0o755)
	copyTree(t, src, run0)
	sh(t, run0, "make -s")
	upd := filepath.Join(work, name+".lsu")
	id := "libcare-" + strings.ReplaceAll(name, "_", "-")
	mustRun(t, "create", "--src", src, "--id", id, "-o", upd, patchFile)

	// One stream, line-buffered (ref_glibc_data's patch prints to stderr);
	// sh and stdbuf exec the program, which keeps the pid.
	p := start(t, run0, "sh", "-c", "exec stdbuf -oL -eL ./"+name+" 2>&1")
	if l := p.line(); !strings.Contains(l, "UNPATCHED") {
		t.Fatalf("before apply: %q", l)
	}
	mustRun(t, "apply", "--pid", p.pid(), upd)
	// A line or two may have been on their way already. libcare's own
	// check for these cases: the greeting no longer says UNPATCHED.
	waitLine(t, p, "after apply", func(l string) bool { return !strings.Contains(l, "UNPATCHED") })
	mustRun(t, "undo", "--pid", p.pid(), id)
	waitLine(t, p, "after undo", func(l string) bool { return strings.Contains(l, "UNPATCHED") })
	p.alive()
}

func waitLine(t *testing.T, p *prog, when string, ok func(string) bool) {
	t.Helper()
	var seen []string
	for i := 0; i < 4; i++ {
		l := p.line()
		if ok(l) {
			return
		}
		seen = append(seen, l)
	}
	t.Fatalf("%s: %q", when, seen)
}
