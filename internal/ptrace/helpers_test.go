package ptrace

import (
	"bufio"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// build compiles testdata/<name>.c into the test's temporary directory.
func build(t *testing.T, name string, flags ...string) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not found")
	}
	bin := filepath.Join(t.TempDir(), name)
	args := append([]string{"-g", "-o", bin, filepath.Join("testdata", name+".c"), "-pthread"}, flags...)
	if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin
}

// prog is a running test program and the lines it prints.
type prog struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

// start runs bin; it is killed (by pid) when the test ends.
func start(t *testing.T, bin string, args ...string) *prog {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	p := &prog{t: t, cmd: cmd, stdin: stdin, lines: make(chan string, 1<<16)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	return p
}

func (p *prog) pid() int { return p.cmd.Process.Pid }

// next returns the next line, failing the test after timeout.
func (p *prog) next(timeout time.Duration) string {
	p.t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			p.t.Fatalf("program exited")
		}
		return l
	case <-time.After(timeout):
		p.t.Fatalf("no output from program for %v", timeout)
	}
	return ""
}

// drain discards the lines printed so far and returns the last one.
func (p *prog) drain() string {
	last := ""
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				return last
			}
			last = l
		default:
			return last
		}
	}
}

// waitFor reads lines until one starts with prefix.
func (p *prog) waitFor(prefix string, timeout time.Duration) string {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		l := p.next(time.Until(deadline))
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
}

// counterAfter checks the program still counts: n increases by one per
// line, for a few lines.
func (p *prog) checkCounting(k int) {
	p.t.Helper()
	p.drain()
	prev := -1
	for i := 0; i < k; i++ {
		f := strings.Fields(p.next(5 * time.Second))
		if len(f) < 1 {
			p.t.Fatalf("bad line %q", f)
		}
		n, err := strconv.Atoi(f[0])
		if err != nil {
			p.t.Fatalf("bad line %q", f)
		}
		if prev >= 0 && n != prev+1 {
			p.t.Fatalf("counter went from %d to %d", prev, n)
		}
		prev = n
	}
}

func attach(t *testing.T, pid int) *Process {
	t.Helper()
	p, err := Attach(pid)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	t.Cleanup(func() { p.Detach() })
	return p
}

// symbols maps the function symbols of bin to their runtime addresses in
// process pid: symbol value plus the load bias.
func symbols(t *testing.T, bin string, pid int) map[string]elf.Symbol {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var firstLoad uint64
	found := false
	for _, ph := range f.Progs {
		if ph.Type == elf.PT_LOAD {
			firstLoad = ph.Vaddr &^ 0xfff
			found = true
			break
		}
	}
	if !found {
		t.Fatal("no PT_LOAD")
	}
	bias := uint64(0)
	if f.Type == elf.ET_DYN {
		base, ok := mapBase(t, pid, bin)
		if !ok {
			t.Fatalf("%s not in /proc/%d/maps", bin, pid)
		}
		bias = base - firstLoad
	}
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]elf.Symbol{}
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Value != 0 {
			s.Value += bias
			out[s.Name] = s
		}
	}
	return out
}

// mapBase returns the start of the mapping of bin at file offset 0.
func mapBase(t *testing.T, pid int, bin string) (uint64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := filepath.EvalSymlinks(bin)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[2] != "00000000" || (f[5] != bin && f[5] != want) {
			continue
		}
		lo, _, _ := strings.Cut(f[0], "-")
		v, err := strconv.ParseUint(lo, 16, 64)
		if err == nil {
			return v, true
		}
	}
	return 0, false
}

// threadState returns the State line of /proc/PID/task/TID/status.
func threadState(pid, tid int) string {
	st, err := readStatus(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
	if err != nil {
		return "gone"
	}
	return st["State"]
}

// tasks lists /proc/PID/task.
func tasks(t *testing.T, pid int) []int {
	t.Helper()
	tids, err := listTasks(pid)
	if err != nil {
		t.Fatal(err)
	}
	return tids
}
