// Command bench measures what a live patch costs the process it patches and
// prints a table (docs/benchmarks.md): the stop-the-world pause of an
// 8-thread target for a 10-function update, as the target itself sees it
// (largest gap in a tight clock loop, against its gap with no apply), the
// wall time of apply and undo, and the cost of calling a patched function.
//
//	go run ./bench [-rounds 50]
//	go run ./bench -fleet [-procs 1000]   (apply --all and undo --all over many processes)
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	rounds := flag.Int("rounds", 50, "apply/undo rounds")
	fleet := flag.Bool("fleet", false, "measure apply --all and undo --all over -procs processes instead")
	procs := flag.Int("procs", 1000, "with -fleet: processes mapping the patched library")
	flag.Parse()
	var err error
	if *fleet {
		err = runFleet(*procs)
	} else {
		err = run(*rounds)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type target struct {
	cmd *exec.Cmd
	in  io.Writer
	out *bufio.Scanner
}

func (t *target) ask(q string) (string, error) {
	if _, err := fmt.Fprintln(t.in, q); err != nil {
		return "", err
	}
	if !t.out.Scan() {
		return "", fmt.Errorf("target exited")
	}
	return t.out.Text(), nil
}

func (t *target) askInt(q string) (float64, error) {
	s, err := t.ask(q)
	if err != nil {
		return 0, err
	}
	return strconv.ParseFloat(s, 64)
}

func sh(dir string, name string, args ...string) error {
	c := exec.Command(name, args...)
	c.Dir = dir
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %v: %v\n%s", name, args, err, out)
	}
	return nil
}

func run(rounds int) error {
	_, self, _, _ := runtime.Caller(0)
	here := filepath.Dir(self)
	work, err := os.MkdirTemp("", "livesplice-bench-")
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
		if err := sh(work, "cp", "-a", filepath.Join(here, "testdata/pause/src"), d); err != nil {
			return err
		}
	}
	if err := sh(runDir, "make", "-s"); err != nil {
		return err
	}
	upd := filepath.Join(work, "fix.lsu")
	t0 := time.Now()
	if err := sh(work, ls, "create", "--src", src, "-o", upd, filepath.Join(here, "testdata/pause/fix.patch")); err != nil {
		return err
	}
	createTime := time.Since(t0)

	cmd := exec.Command("./prog")
	cmd.Dir = runDir
	in, _ := cmd.StdinPipe()
	outp, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	t := &target{cmd: cmd, in: in, out: bufio.NewScanner(outp)}
	pid := strconv.Itoa(cmd.Process.Pid)
	time.Sleep(500 * time.Millisecond)

	var base, applyGap, undoGap, applyWall, undoWall []float64
	for i := 0; i < rounds; i++ {
		if _, err := t.ask("reset"); err != nil {
			return err
		}
		time.Sleep(60 * time.Millisecond)
		g, err := t.askInt("gap")
		if err != nil {
			return err
		}
		base = append(base, g)
	}
	callBefore, err := t.askInt("call 20000000")
	if err != nil {
		return err
	}
	var callAfter float64
	for i := 0; i < rounds; i++ {
		for _, step := range []struct {
			args      []string
			gap, wall *[]float64
		}{
			{[]string{"apply", "--pid", pid, upd}, &applyGap, &applyWall},
			{[]string{"undo", "--pid", pid, "fix"}, &undoGap, &undoWall},
		} {
			if _, err := t.ask("reset"); err != nil {
				return err
			}
			s := time.Now()
			if err := sh(work, ls, step.args...); err != nil {
				return err
			}
			*step.wall = append(*step.wall, float64(time.Since(s).Nanoseconds()))
			g, err := t.askInt("gap")
			if err != nil {
				return err
			}
			*step.gap = append(*step.gap, g)
			if i == 0 && step.args[0] == "apply" {
				if callAfter, err = t.askInt("call 20000000"); err != nil {
					return err
				}
			}
		}
	}
	host, _ := os.Hostname()
	fmt.Printf("machine: %s, %d cores, %s, kernel %s; %d rounds\n\n", cpuModel(), runtime.NumCPU(), host, kernel(), rounds)
	fmt.Println("| measure | median | p99 |")
	fmt.Println("|---|---|---|")
	row := func(name string, v []float64, unit float64, u string) {
		fmt.Printf("| %s | %.3f %s | %.3f %s |\n", name, pct(v, 50)/unit, u, pct(v, 99)/unit, u)
	}
	row("largest loop gap, no apply (baseline)", base, 1e6, "ms")
	row("largest loop gap during apply (pause)", applyGap, 1e6, "ms")
	row("largest loop gap during undo (pause)", undoGap, 1e6, "ms")
	row("apply wall time (command)", applyWall, 1e6, "ms")
	row("undo wall time (command)", undoWall, 1e6, "ms")
	fmt.Printf("| create wall time (10 functions) | %.0f ms | |\n", float64(createTime.Milliseconds()))
	fmt.Printf("| call of f1, unpatched | %.3f ns | |\n", callBefore)
	fmt.Printf("| call of f1, patched (through the jump) | %.3f ns | |\n", callAfter)
	return nil
}

func pct(v []float64, p float64) float64 {
	s := append([]float64{}, v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "model name") {
			_, v, _ := strings.Cut(l, ":")
			return strings.TrimSpace(v)
		}
	}
	return "unknown cpu"
}

func kernel() string {
	data, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(data))
}
