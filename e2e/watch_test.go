package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// watchDaemon is a running `livesplice watch --json`.
type watchDaemon struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan watchLine
}

type watchLine struct {
	Event  string `json:"event"`
	Pid    int    `json:"pid"`
	Update string `json:"update"`
	When   string `json:"when"`
	Reason string `json:"reason"`
}

func startWatch(t *testing.T, files ...string) *watchDaemon {
	t.Helper()
	cmd := exec.Command(livesplice, append([]string{"watch", "--json"}, files...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &watchDaemon{t: t, cmd: cmd, lines: make(chan watchLine, 1024)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var l watchLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				l = watchLine{Event: "bad line: " + sc.Text()}
			}
			w.lines <- l
		}
		close(w.lines)
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill() // only the daemon this test started
			cmd.Wait()
		}
	})
	return w
}

// next waits for the next event line for which keep is true, failing on
// a "failed" event of one of the test's processes (mine).
func (w *watchDaemon) next(what string, mine []*prog, keep func(watchLine) bool) watchLine {
	w.t.Helper()
	for {
		select {
		case l, ok := <-w.lines:
			if !ok {
				w.t.Fatalf("watch exited while waiting for %s: %v", what, w.cmd.Wait())
			}
			if strings.HasPrefix(l.Event, "bad line") {
				w.t.Fatalf("watch: %s", l.Event)
			}
			for _, p := range mine {
				if l.Event == "failed" && fmt.Sprint(l.Pid) == p.pid() {
					w.t.Fatalf("watch: %+v", l)
				}
			}
			if keep(l) {
				return l
			}
		case <-time.After(30 * time.Second):
			w.t.Fatalf("watch: no %s", what)
		}
	}
}

// tracerPid is the TracerPid of a process: the thread that traces it.
func tracerPid(t *testing.T, pid string) string {
	t.Helper()
	data, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "TracerPid:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// livesplice watch patches the processes running when it starts, and a
// process that starts later before its program runs: its first output
// line is already the patched one. Once the daemon stops, the processes
// stay patched and new ones run the old code.
func TestWatch(t *testing.T) {
	slow(t)
	if os.Getuid() != 0 {
		t.Skip("needs root: the process connector and ptrace")
	}
	caseDir, _ := filepath.Abs("testdata/watch")
	work := t.TempDir()
	run0 := filepath.Join(work, "run")
	sh(t, work, "mkdir src run")
	copyTree(t, filepath.Join(caseDir, "src"), filepath.Join(work, "src"))
	copyTree(t, filepath.Join(caseDir, "src"), run0)
	sh(t, run0, "make -s")
	upd := filepath.Join(work, "fix.lsu")
	mustRun(t, "create", "--src", filepath.Join(work, "src"), "--id", "watch-e2e-fix", "-o", upd, filepath.Join(caseDir, "fix.patch"))

	early := start(t, run0, "./watch_e2e_target")
	if got := early.line(); got != "fee=37" {
		t.Fatalf("before watch: %q", got)
	}

	w := startWatch(t, upd)
	w.next("patch of the running process", []*prog{early}, func(l watchLine) bool {
		return l.Event == "patched" && fmt.Sprint(l.Pid) == early.pid() && l.When == "running"
	})
	w.next("ready", []*prog{early}, func(l watchLine) bool { return l.Event == "ready" })
	if got := early.query("x"); got != "fee=38" {
		t.Fatalf("process running when watch started: %q", got)
	}

	// The new process waits in a library constructor (before its entry
	// point) until watch has seized it, so that the check does not
	// depend on how fast watch reacts to the exec.
	late := start(t, run0, "env", "WATCH_GATE=1", "./watch_e2e_target")
	// TracerPid names the tracing thread: one of the daemon's.
	seized := func() bool {
		tr := tracerPid(t, late.pid())
		_, err := os.Stat(fmt.Sprintf("/proc/%d/task/%s", w.cmd.Process.Pid, tr))
		return tr != "0" && err == nil
	}
	for i := 0; !seized(); i++ {
		if i == 3000 {
			t.Fatalf("watch never seized the new process %s", late.pid())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := late.in.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	if got := late.line(); got != "fee=38" {
		t.Fatalf("new process's first line under watch: %q", got)
	}
	w.next("patch at the entry point", []*prog{early, late}, func(l watchLine) bool {
		return l.Event == "patched" && fmt.Sprint(l.Pid) == late.pid() && l.When == "entry"
	})

	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	w.next("stopped", []*prog{early, late}, func(l watchLine) bool { return l.Event == "stopped" })
	if err := w.cmd.Wait(); err != nil {
		t.Fatalf("watch after SIGTERM: %v", err)
	}
	for _, p := range []*prog{early, late} {
		if got := p.query("x"); got != "fee=38" {
			t.Fatalf("pid %s after watch stopped: %q", p.pid(), got)
		}
		if tr := tracerPid(t, p.pid()); tr != "0" {
			t.Fatalf("pid %s still traced by %s", p.pid(), tr)
		}
	}
	after := start(t, run0, "./watch_e2e_target")
	if got := after.line(); got != "fee=37" {
		t.Fatalf("process started after watch stopped: %q", got)
	}
}
