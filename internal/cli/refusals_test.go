package cli

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"livesplice/internal/kernel"
	"livesplice/internal/update"
)

// writeUpdateFile writes a valid update file of the given kind.
func writeUpdateFile(t *testing.T, f *update.File) string {
	t.Helper()
	data, err := update.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), f.ID+".lsu")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func processUpdate(t *testing.T) string {
	return writeUpdateFile(t, &update.File{ID: "pfix", Kind: update.KindProcess, Patch: strings.Repeat("0", 64),
		Targets: []update.Target{{Path: "bin/prog", PreBuildID: "0123456789abcdef"}}})
}

func kernelUpdate(t *testing.T, release string) string {
	return writeUpdateFile(t, &update.File{ID: "kfix", Kind: update.KindKernel, Patch: strings.Repeat("0", 64),
		Kernel: &update.Kernel{Release: release, ModuleName: "livesplice_kfix", Module: []byte("never loaded")}})
}

// kernelState is what apply --kernel could change: livesplice's records,
// the livepatches and the loaded modules.
func kernelState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, d := range []string{kernel.System.Run, "/sys/kernel/livepatch"} {
		ents, err := os.ReadDir(d)
		fmt.Fprintf(&b, "%s: %v", d, os.IsNotExist(err))
		for _, e := range ents {
			b.WriteString(" " + e.Name())
		}
		b.WriteString("\n")
	}
	mods, err := os.ReadFile("/proc/modules") // none without module support (e.g. gVisor)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(string(mods), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	slices.Sort(names)
	b.WriteString(strings.Join(names, " "))
	return b.String()
}

// run runs the command line and checks the exit code, the one-line
// message and that nothing went to stdout.
func run(t *testing.T, args []string, exit int, msg string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(args, &out, &errb)
	if code != exit || !strings.Contains(errb.String(), msg) {
		t.Errorf("%v: exit %d, stderr %q; want %d and %q", args, code, errb.String(), exit, msg)
	}
	if strings.Count(strings.TrimRight(errb.String(), "\n"), "\n") != 0 || out.Len() != 0 {
		t.Errorf("%v: stderr %q, stdout %q: want one line on stderr only", args, errb.String(), out.String())
	}
}

// apply --kernel of a process update is refused as not for this target
// (exit 3) before the kernel is looked at.
func TestApplyKernelRefusesProcessUpdate(t *testing.T) {
	file := processUpdate(t)
	before := kernelState(t)
	run(t, []string{"apply", "--kernel", file}, ExitMismatch, "update pfix is a process update, not for the kernel")
	if after := kernelState(t); after != before {
		t.Errorf("the kernel's state changed:\n%s\n%s", before, after)
	}
}

// apply --kernel of an update built for another kernel release: exit 3,
// nothing loaded, no record or lock written.
func TestApplyKernelRefusesOtherRelease(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("apply --kernel refuses a non-root user first (exit 7)")
	}
	rel, err := kernel.Release()
	if err != nil {
		t.Fatal(err)
	}
	file := kernelUpdate(t, rel+"-other")
	before := kernelState(t)
	run(t, []string{"apply", "--kernel", file}, ExitMismatch, "was built for kernel "+rel+"-other, this one runs "+rel)
	if after := kernelState(t); after != before {
		t.Errorf("the kernel's state changed:\n%s\n%s", before, after)
	}
}

// apply --pid of a kernel update is refused (exit 3) without attaching.
func TestApplyPidRefusesKernelUpdate(t *testing.T) {
	file := kernelUpdate(t, "6.1.0-18-amd64")
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := cmd.Process.Pid
	maps := func() string {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// Compare only once sleep sleeps: until then the loader still maps.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		sc, _ := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
		if strings.HasPrefix(string(sc), fmt.Sprint(unix.SYS_CLOCK_NANOSLEEP)+" ") || strings.HasPrefix(string(sc), fmt.Sprint(unix.SYS_NANOSLEEP)+" ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sleep %d never went to sleep: %q", pid, sc)
		}
	}
	before := maps()
	run(t, []string{"apply", "--pid", strconv.Itoa(pid), file}, ExitMismatch, "update kfix is a kernel update, not for process "+strconv.Itoa(pid))
	if after := maps(); after != before {
		t.Errorf("process %d's mappings changed:\n%s\n%s", pid, before, after)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if !strings.Contains(string(status), "TracerPid:\t0\n") {
		t.Errorf("process %d is traced:\n%s", pid, status)
	}
}

// create refuses an id that cannot name an update, or (--kernel) whose
// livepatch module name would pass the kernel's 55 characters, as a bad
// command line before any work: no kernel tree needed, no output written.
func TestCreateRefusesBadID(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	patch := filepath.Join(dir, "fix.patch")
	if err := os.WriteFile(patch, []byte("--- a/x.c\n+++ b/x.c\n@@ -1 +1 @@\n-a\n+b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spaced := filepath.Join(dir, "my fix.patch")
	if err := os.WriteFile(spaced, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "u.lsu")
	kern := func(more ...string) []string {
		return append([]string{"create", "--kernel", "--src", src, "--config", filepath.Join(dir, "config"), "-o", out}, more...)
	}
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{kern("--id", strings.Repeat("a", 45), patch), "livepatch module name livesplice_" + strings.Repeat("a", 45) + " is longer than 55 characters"},
		{kern("--id", strings.Repeat("a", 65), patch), "bad update id"},
		{kern("--id", "../x", patch), `bad update id "../x"`},
		{kern("--id", "-x", patch), `bad update id "-x"`},
		{kern("--id", "a b", patch), `bad update id "a b"`},
		{kern(spaced), `bad update id "my fix"`}, // the default id, from the patch's name
		{[]string{"create", "--src", src, "-o", out, "--id", "a/b", patch}, `bad update id "a/b"`},
		// --deb checks the id before asking apt anything.
		{[]string{"create", "--deb", "no-such-source-package", "-o", out, "--id", "a b", patch}, `bad update id "a b"`},
	} {
		run(t, c.args, ExitUsage, c.msg)
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Fatalf("%v wrote %s", c.args, out)
		}
		if ents, _ := os.ReadDir(src); len(ents) != 0 {
			t.Fatalf("%v wrote into the source tree", c.args)
		}
	}
	// 44 characters make a 55-character module name: the id passes and
	// create goes on to the tree (here: no config file).
	var o, e bytes.Buffer
	args := kern("--id", strings.Repeat("a", 44), filepath.Join(dir, "missing.patch"))
	if code := Main(args, &o, &e); code != ExitError || strings.Contains(e.String(), "update id") {
		t.Errorf("%v: exit %d, %q; want the id accepted and a later failure", args, code, e.String())
	}
}
