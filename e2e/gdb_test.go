package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// gdb takes a backtrace through a patched function: `show --gdb` writes
// symbol files with the new code's names and call frame information. The
// new work() blocks in pause(); from there gdb must name work and reach
// answer and main, with no unknown frame. Without the carried .eh_frame gdb
// cannot find work's caller (it prints "?? ()" frames instead).
func TestGDBBacktraceThroughPatchedCode(t *testing.T) {
	slow(t)
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

	// perf names the same code from /tmp/perf-PID.map; twice adds nothing.
	path := strings.TrimSpace(mustRun(t, "show", "--pid", p.pid(), "--perf-map").stdout)
	defer os.Remove(path) // made by this test for the process it started
	mustRun(t, "show", "--pid", p.pid(), "--perf-map")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var work []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasSuffix(l, " work [livesplice fix]") {
			work = append(work, l)
		}
	}
	if len(work) != 1 {
		t.Fatalf("perf map %s:\n%s", path, data)
	}
	var start, size uint64
	if _, err := fmt.Sscanf(work[0], "%x %x", &start, &size); err != nil || size == 0 {
		t.Fatalf("perf map line %q: %v", work[0], err)
	}
	if !inWork(string(bt), start, size) {
		t.Fatalf("gdb's work frame is not inside %x+%x:\n%s", start, size, bt)
	}
}

// inWork reports whether gdb's frame in work() has a pc in [start,start+size).
func inWork(bt string, start, size uint64) bool {
	m := regexp.MustCompile(`#\d+\s+0x([0-9a-f]+) in work \(\)`).FindStringSubmatch(bt)
	if m == nil {
		return false
	}
	pc, err := strconv.ParseUint(m[1], 16, 64)
	return err == nil && pc >= start && pc < start+size
}
