package e2e

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// gdb takes a backtrace through a patched function: `show --gdb` writes
// symbol files with the new code's names and call frame information. The
// new work() blocks in pause(); from there gdb must name work and reach
// answer and main, with no unknown frame. Without the carried .eh_frame gdb
// cannot find work's caller (it prints "?? ()" frames instead).
func TestGDBBacktraceThroughPatchedCode(t *testing.T) {
	needRoot(t)
	gdb, err := exec.LookPath("gdb")
	if err != nil {
		t.Fatal("gdb is needed (.ci/run installs it)")
	}
	dir, upd := setup(t, "backtrace", "", "fix.patch")
	p := start(t, dir, "./prog")
	p.want("3", "6")
	mustRun(t, "apply", "--pid", p.pid(), upd["fix"])
	p.want("7", "pausing") // now inside the new work(), in pause()

	out := mustRun(t, "show", "--pid", p.pid(), "--gdb", filepath.Join(t.TempDir(), "gdb")).stdout
	m := regexp.MustCompile(`^gdb -p ([0-9]+) -x (\S+)\n$`).FindStringSubmatch(out)
	if m == nil || m[1] != p.pid() {
		t.Fatalf("show --gdb printed %q", out)
	}
	bt, err := exec.Command(gdb, "-batch", "-nx", "-p", p.pid(), "-x", m[2], "-ex", "bt").CombinedOutput()
	if err != nil {
		t.Fatalf("gdb: %v\n%s", err, bt)
	}
	var frames []string
	for _, l := range strings.Split(string(bt), "\n") {
		if strings.HasPrefix(l, "#") {
			frames = append(frames, l)
		}
	}
	want := []string{"pause", " in work ()", " in answer ", " in main ()"}
	if len(frames) < len(want) {
		t.Fatalf("backtrace too short:\n%s", bt)
	}
	for i, w := range want {
		if !strings.Contains(frames[i], w) {
			t.Fatalf("frame %d is %q, want %q; whole output:\n%s", i, frames[i], w, bt)
		}
	}
	for _, f := range frames {
		if strings.Contains(f, "??") {
			t.Fatalf("unknown frame in:\n%s", bt)
		}
	}
}
