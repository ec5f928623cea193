package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// runFleet starts n processes of one program that each map the library an
// update changes, then times `apply --all` and `undo --all` over them,
// collects each process's pause from apply's -v log, and measures the
// memory the patch adds to a process (smaps, before and after).
func runFleet(n int) error {
	_, self, _, _ := runtime.Caller(0)
	here := filepath.Dir(self)
	work, err := os.MkdirTemp("", "livesplice-bench-fleet-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	ls := filepath.Join(work, "livesplice")
	if err := sh(filepath.Join(here, ".."), "go", "build", "-o", ls, "./cmd/livesplice"); err != nil {
		return err
	}
	src, runDir := filepath.Join(work, "src"), filepath.Join(work, "run")
	for _, d := range []string{src, runDir} {
		if err := sh(work, "cp", "-a", filepath.Join(here, "testdata/fleet/src"), d); err != nil {
			return err
		}
	}
	if err := sh(runDir, "make", "-s"); err != nil {
		return err
	}
	upd := filepath.Join(work, "fix.lsu")
	if err := sh(work, ls, "create", "--src", src, "--id", "fleet-bench-fix", "-o", upd, filepath.Join(here, "testdata/fleet/fix.patch")); err != nil {
		return err
	}

	var cmds []*exec.Cmd
	defer func() {
		for _, c := range cmds {
			c.Process.Kill() // only the processes this benchmark started
			c.Wait()
		}
	}()
	t0 := time.Now()
	for i := 0; i < n; i++ {
		c := exec.Command("./prog")
		c.Dir = runDir
		if err := c.Start(); err != nil {
			return fmt.Errorf("start process %d of %d: %w", i+1, n, err)
		}
		cmds = append(cmds, c)
	}
	// Every process maps the library and sleeps in pause().
	for _, c := range cmds {
		for !inPause(c.Process.Pid) {
			if time.Since(t0) > 2*time.Minute {
				return fmt.Errorf("process %d never reached pause()", c.Process.Pid)
			}
			time.Sleep(time.Millisecond)
		}
	}
	startTime := time.Since(t0)

	sample := cmds
	if len(sample) > 20 {
		sample = sample[:20]
	}
	before := privateKiB(sample)

	load := loadAvg()
	// The timed runs go without -v, whose log costs about a tenth of the
	// time; a third run with -v gives each process's pause and the memory.
	applyOut, applyErr, applyWall, applyCPU, err := timed(work, ls, "apply", "--all", upd)
	if err != nil {
		return fmt.Errorf("apply --all: %w: %s", err, applyErr)
	}
	if want := fmt.Sprintf("patched %d, skipped 0, failed 0", n); strings.TrimSpace(applyOut) != want {
		return fmt.Errorf("apply --all: %q, want %q: %s", applyOut, want, applyErr)
	}
	undoOut, undoErr, undoWall, undoCPU, err := timed(work, ls, "undo", "--all", "fleet-bench-fix")
	if err != nil {
		return fmt.Errorf("undo --all: %w: %s", err, undoErr)
	}
	if want := fmt.Sprintf("unpatched %d, skipped 0, failed 0", n); strings.TrimSpace(undoOut) != want {
		return fmt.Errorf("undo --all: %q, want %q: %s", undoOut, want, undoErr)
	}
	_, applyErr, againWall, _, err := timed(work, ls, "apply", "--all", "-v", upd)
	if err != nil {
		return fmt.Errorf("apply --all -v: %w: %s", err, applyErr)
	}
	pauses := stoppedFor(applyErr)
	if len(pauses) != n {
		return fmt.Errorf("apply --all -v: %d pause lines for %d processes", len(pauses), n)
	}
	after := privateKiB(sample)
	if _, undoErr, _, _, err = timed(work, ls, "undo", "--all", "fleet-bench-fix"); err != nil {
		return fmt.Errorf("undo --all: %w: %s", err, undoErr)
	}

	var added []float64
	for i := range before {
		added = append(added, float64(after[i]-before[i]))
	}
	host, _ := os.Hostname()
	fmt.Printf("machine: %s, %d cores, %s, kernel %s; %d processes (started in %.1f s); load average %s before apply\n\n", cpuModel(), runtime.NumCPU(), host, kernel(), n, startTime.Seconds(), load)
	fmt.Println("| measure | value |")
	fmt.Println("|---|---|")
	fmt.Printf("| apply --all, wall time | %.2f s (%.1f ms per process) |\n", applyWall.Seconds(), float64(applyWall.Microseconds())/1000/float64(n))
	fmt.Printf("| apply --all, CPU time of livesplice (user+sys) | %.2f s |\n", applyCPU.Seconds())
	fmt.Printf("| apply --all again, wall time (each process has its state record; with -v) | %.2f s |\n", againWall.Seconds())
	fmt.Printf("| undo --all, wall time | %.2f s (%.1f ms per process) |\n", undoWall.Seconds(), float64(undoWall.Microseconds())/1000/float64(n))
	fmt.Printf("| undo --all, CPU time of livesplice (user+sys) | %.2f s |\n", undoCPU.Seconds())
	fmt.Printf("| pause per process during apply, median / p99 / max | %.3f / %.3f / %.3f ms |\n", pct(pauses, 50)/1e6, pct(pauses, 99)/1e6, pct(pauses, 100)/1e6)
	fmt.Printf("| private memory the patch adds per process (smaps, median of %d) | %.0f KiB (%.0f pages) |\n", len(added), pct(added, 50), pct(added, 50)/4)
	return nil
}

// timed runs a command and returns its stdout, stderr, wall time and
// CPU time (user+system).
func timed(dir, name string, args ...string) (string, string, time.Duration, time.Duration, error) {
	c := exec.Command(name, args...)
	c.Dir = dir
	var o, e bytes.Buffer
	c.Stdout, c.Stderr = &o, &e
	s := time.Now()
	err := c.Run()
	wall := time.Since(s)
	var cpu time.Duration
	if c.ProcessState != nil {
		cpu = c.ProcessState.UserTime() + c.ProcessState.SystemTime()
	}
	return o.String(), e.String(), wall, cpu, err
}

// loadAvg is the 1-minute load average: on a shared machine the wall
// times depend on it.
func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

// inPause reports whether the process sleeps in pause() (its syscall file
// starts with the call's number, 34 on x86-64).
func inPause(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
	return err == nil && strings.HasPrefix(string(b), "34 ")
}

var stoppedRe = regexp.MustCompile(`\(stopped for ([^,]+), total`)

// stoppedFor collects the pauses of apply -v's "applied ... (stopped for
// D, total T)" lines, in nanoseconds.
func stoppedFor(log string) []float64 {
	var out []float64
	for _, m := range stoppedRe.FindAllStringSubmatch(log, -1) {
		if d, err := time.ParseDuration(m[1]); err == nil {
			out = append(out, float64(d.Nanoseconds()))
		}
	}
	return out
}

// privateKiB sums each process's private memory (Private_Clean +
// Private_Dirty over smaps_rollup).
func privateKiB(cmds []*exec.Cmd) []int {
	var out []int
	for _, c := range cmds {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", c.Process.Pid))
		kib := 0
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "Private_Clean:") || strings.HasPrefix(l, "Private_Dirty:") {
				f := strings.Fields(l)
				if len(f) >= 2 {
					v, _ := strconv.Atoi(f[1])
					kib += v
				}
			}
		}
		out = append(out, kib)
	}
	return out
}
