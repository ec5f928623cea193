package e2e

// Hostile targets: a process already traced by a debugger, two livesplice
// commands racing for one process, a process stopped by job control, threads
// blocked in system calls, a process that exits or forks while it is being
// patched, and livesplice run without root.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root: starts programs and patches them with ptrace")
	}
}

// setup copies testdata/NAME/src twice, builds one copy the ordinary way
// in dir (or a fresh directory if dir is ""), and creates one update per
// patch from the pristine copy, each with the patch's base name as id.
// It returns the built directory and the update files by id.
func setup(t *testing.T, name, dir string, patches ...string) (string, map[string]string) {
	t.Helper()
	caseDir, _ := filepath.Abs(filepath.Join("testdata", name))
	work := t.TempDir()
	src := filepath.Join(work, "src")
	if dir == "" {
		dir = filepath.Join(work, "run")
	}
	for _, d := range []string{src, dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		copyTree(t, filepath.Join(caseDir, "src"), d)
	}
	sh(t, dir, "make")
	upd := map[string]string{}
	for _, patch := range patches {
		id := strings.TrimSuffix(patch, filepath.Ext(patch))
		out := filepath.Join(dir, id+".lsu")
		mustRun(t, "create", "--src", src, "--id", id, "-o", out, filepath.Join(caseDir, patch))
		upd[id] = out
	}
	return dir, upd
}

// invoke runs argv (livesplice, or a wrapper that runs it) and kills it,
// by pid, if it takes longer than limit. It never calls t.Fatal, so that
// goroutines may use it.
func invoke(limit time.Duration, argv ...string) (result, time.Duration, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return result{}, 0, err
	}
	timer := time.AfterFunc(limit, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	took := time.Since(t0)
	if !timer.Stop() {
		return result{stdout: o.String(), stderr: e.String(), exit: -1}, took,
			fmt.Errorf("%s did not finish in %v (killed): %s", strings.Join(argv, " "), limit, e.String())
	}
	r := result{stdout: o.String(), stderr: e.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.exit = ee.ExitCode()
	} else if err != nil {
		return r, took, err
	}
	return r, took, nil
}

// refused checks a failed command: exit code, and one line on stderr
// starting with "livesplice: " and containing every one of want.
func refused(t *testing.T, what string, r result, exit int, want ...string) {
	t.Helper()
	msg := strings.TrimSuffix(r.stderr, "\n")
	if r.exit != exit {
		t.Fatalf("%s: want exit %d, got %d: %s", what, exit, r.exit, r.stderr)
	}
	if !strings.HasPrefix(msg, "livesplice: ") || strings.Contains(msg, "\n") {
		t.Fatalf("%s: stderr is not one livesplice line: %q", what, r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Fatalf("%s: message does not say %q: %s", what, w, msg)
		}
	}
}

// showIDs returns the ids show --json reports for pid, oldest first.
func showIDs(t *testing.T, pid string) []string {
	t.Helper()
	r := mustRun(t, "show", "--pid", pid, "--json")
	return parseShow(t, r.stdout)
}

func parseShow(t *testing.T, out string) []string {
	t.Helper()
	var sj struct {
		Updates []struct{ ID string } `json:"updates"`
	}
	if err := json.Unmarshal([]byte(out), &sj); err != nil {
		t.Fatalf("show --json: %v: %q", err, out)
	}
	ids := []string{}
	for _, u := range sj.Updates {
		ids = append(ids, u.ID)
	}
	return ids
}

func wantShow(t *testing.T, pid string, ids ...string) {
	t.Helper()
	if ids == nil {
		ids = []string{}
	}
	if got := showIDs(t, pid); !slices.Equal(got, ids) {
		t.Fatalf("show: got %v, want %v", got, ids)
	}
}

func (p *prog) want(q, want string) {
	p.t.Helper()
	if got := p.query(q); got != want {
		p.t.Fatalf("query %q: got %q, want %q", q, got, want)
	}
}

// quiet fails if the program prints a line within d.
func (p *prog) quiet(d time.Duration) {
	p.t.Helper()
	select {
	case l, ok := <-p.lines:
		if ok {
			p.t.Fatalf("program %s answered while it should be stopped: %q", p.pid(), l)
		}
		p.t.Fatalf("program %s exited", p.pid())
	case <-time.After(d):
	}
}

func (p *prog) send(q string) {
	p.t.Helper()
	if _, err := p.in.Write([]byte(q + "\n")); err != nil {
		p.t.Fatalf("write to program: %v", err)
	}
}

// tids lists the threads of the test's own program pid.
func tids(t *testing.T, pid string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + pid + "/task")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// procField returns a field of /proc/PID/task/TID/status.
func procField(pid, tid, field string) string {
	b, err := os.ReadFile("/proc/" + pid + "/task/" + tid + "/status")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == field {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tracer is a debugger holding (some threads of) the test's program.
type tracer struct {
	cmd *exec.Cmd
	// running: the traced program keeps running (strace); gdb stops it
	// while attached.
	running bool
}

func (tr *tracer) pid() string { return strconv.Itoa(tr.cmd.Process.Pid) }

// attachTracer attaches strace to thread tid of pid (all threads with
// all), or gdb in batch mode to the whole process if strace is missing,
// and waits until the kernel shows it as tracer.
func attachTracer(t *testing.T, pid, tid string, all bool) *tracer {
	t.Helper()
	tr := &tracer{running: true}
	if _, err := exec.LookPath("strace"); err == nil {
		args := []string{"-o", "/dev/null", "-p", tid}
		if all {
			args = append([]string{"-f"}, args...)
		}
		tr.cmd = exec.Command("strace", args...)
	} else {
		tr.running = false
		tr.cmd = exec.Command("gdb", "-q", "-nx", "-batch", "-p", pid, "-ex", "shell sleep 2")
	}
	tr.cmd.Stdout, tr.cmd.Stderr = nil, nil
	if err := tr.cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", tr.cmd.Args, err)
	}
	t.Cleanup(tr.stop)
	eventually(t, tr.cmd.Args[0]+" traces thread "+tid, func() bool {
		return procField(pid, tid, "TracerPid") == tr.pid()
	})
	return tr
}

// stop ends the tracer (strace detaches on SIGTERM; gdb detaches at the
// end of its batch) and waits for it.
func (tr *tracer) stop() {
	if tr.cmd.ProcessState != nil {
		return
	}
	if tr.running {
		tr.cmd.Process.Signal(syscall.SIGTERM) // only the tracer this test started, by pid
	}
	tr.cmd.Wait()
}

// 1. A process another tracer holds: apply and undo refuse with exit 7,
// naming the tracer, and leave the program running unchanged. The tracer
// holds the whole process, only the leader, or only another thread (then
// livesplice has seized the leader already and must let it go again).
func TestHostileTraced(t *testing.T) {
	slow(t)
	needRoot(t)
	dir, upd := setup(t, "answer", "", "fix.patch")
	p := start(t, dir, "./prog")
	p.want("x", "a=1 b=10")
	var worker string
	for _, tid := range tids(t, p.pid()) {
		if tid != p.pid() {
			worker = tid
		}
	}
	variants := []struct {
		name string
		tid  string
		all  bool
	}{
		{"whole process", p.pid(), true},
		{"leader only", p.pid(), false},
		{"other thread only", worker, false},
	}
	for _, v := range variants {
		tr := attachTracer(t, p.pid(), v.tid, v.all)
		if !tr.running && v.tid != p.pid() {
			tr.stop()
			continue // gdb always takes the whole process
		}
		r := run(t, "apply", "--pid", p.pid(), upd["fix"])
		refused(t, v.name+": apply", r, 7, "already traced", "by pid "+tr.pid())
		if tr.running {
			p.want("x", "a=1 b=10")
		}
		tr.stop()
		p.want("x", "a=1 b=10")
		wantShow(t, p.pid())
		// Nothing of the refused attempt is left behind: apply works now.
		mustRun(t, "apply", "--pid", p.pid(), upd["fix"])
		p.want("x", "a=2 b=10")

		tr = attachTracer(t, p.pid(), v.tid, v.all)
		r = run(t, "undo", "--pid", p.pid(), "fix")
		refused(t, v.name+": undo", r, 7, "already traced", "by pid "+tr.pid())
		if tr.running {
			p.want("x", "a=2 b=10")
		}
		tr.stop()
		p.want("x", "a=2 b=10")
		wantShow(t, p.pid(), "fix")
		mustRun(t, "undo", "--pid", p.pid(), "fix")
		p.want("x", "a=1 b=10")
	}
}

// 2. Two livesplice commands on one process at once, many times: each
// applies its update or refuses because the other holds the process;
// at least one applies, and show agrees with what the program does.
func TestHostileConcurrent(t *testing.T) {
	slow(t)
	needRoot(t)
	dir, upd := setup(t, "answer", "", "fix.patch", "other.patch")
	p := start(t, dir, "./prog")
	p.want("x", "a=1 b=10")
	ids := []string{"fix", "other"}
	both := 0
	for round := 0; round < 10; round++ {
		var rs [2]result
		var errs [2]error
		var wg sync.WaitGroup
		for i := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Stagger one start by 0-27 ms, so that it meets the
				// other at attach, while it prepares, commits or detaches.
				if i == round%2 {
					time.Sleep(time.Duration(round*3) * time.Millisecond)
				}
				rs[i], _, errs[i] = invoke(30*time.Second, livesplice, "apply", "--pid", p.pid(), upd[ids[i]])
			}()
		}
		wg.Wait()
		var applied []string
		for i, r := range rs {
			if errs[i] != nil {
				t.Fatalf("round %d: apply %s: %v", round, ids[i], errs[i])
			}
			if r.exit == 0 {
				applied = append(applied, ids[i])
				continue
			}
			refused(t, fmt.Sprintf("round %d: apply %s", round, ids[i]), r, 7, "already traced by pid")
		}
		if len(applied) == 0 {
			t.Fatalf("round %d: both refused: %q, %q", round, rs[0].stderr, rs[1].stderr)
		}
		if len(applied) == 2 {
			both++
		}
		got := showIDs(t, p.pid())
		slices.Sort(got)
		if !slices.Equal(got, applied) {
			t.Fatalf("round %d: show says %v, the commands applied %v", round, got, applied)
		}
		a, b := 1, 10
		if slices.Contains(applied, "fix") {
			a = 2
		}
		if slices.Contains(applied, "other") {
			b = 20
		}
		p.want("x", fmt.Sprintf("a=%d b=%d", a, b))
		for _, id := range applied {
			mustRun(t, "undo", "--pid", p.pid(), id)
		}
		p.want("x", "a=1 b=10")
		wantShow(t, p.pid())
	}
	t.Logf("both applied in %d of 10 rounds", both)
}

// allStopped reports whether every thread of pid is in job-control stop
// (state T; "t" would be a ptrace stop, i.e. still traced).
func allStopped(pid string) bool {
	ents, err := os.ReadDir("/proc/" + pid + "/task")
	if err != nil {
		return false
	}
	for _, e := range ents {
		if !strings.HasPrefix(procField(pid, e.Name(), "State"), "T") {
			return false
		}
	}
	return true
}

// 3. A process stopped by SIGSTOP (job control). Decision: apply and undo
// work and leave it stopped. That is safe: livesplice only ever writes
// with every thread stopped anyway, and a job-control stop is one more
// reason none runs; the stop belongs to whoever sent SIGSTOP (a shell, a
// supervisor), so livesplice must neither continue the process nor
// refuse an update an operator may want in place before continuing it.
// The new code runs from SIGCONT on. Refusing would be safe too, but
// needless.
func TestHostileJobControlStopped(t *testing.T) {
	slow(t)
	needRoot(t)
	dir, upd := setup(t, "answer", "", "fix.patch")
	p := start(t, dir, "./prog")
	pid := p.cmd.Process.Pid
	p.want("x", "a=1 b=10")

	stop := func() time.Time {
		t.Helper()
		p.query("r")                       // reset the worker's gap measurement
		syscall.Kill(pid, syscall.SIGSTOP) // only the program this test started
		eventually(t, "every thread is stopped", func() bool { return allStopped(p.pid()) })
		return time.Now()
	}
	stillStopped := func(what string) {
		t.Helper()
		if !allStopped(p.pid()) {
			t.Fatalf("%s: the process is no longer stopped", what)
		}
		p.quiet(300 * time.Millisecond)
	}
	// cont continues the process and checks that no thread ran at all
	// while it was held: the worker saw one gap as long as the stop.
	cont := func(what string, since time.Time, want string) {
		t.Helper()
		held := time.Since(since)
		syscall.Kill(pid, syscall.SIGCONT)
		if want != "" {
			if got := p.line(); got != want {
				t.Fatalf("%s and SIGCONT: got %q, want %q", what, got, want)
			}
		}
		// The worker records the gap at its first turn after SIGCONT,
		// which on a loaded machine may come late: poll for it. If it ran
		// while stopped, the long gap never appears.
		var gap int64
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			got := p.query("g")
			if _, err := fmt.Sscanf(got, "gap_ms=%d", &gap); err != nil {
				t.Fatalf("%s: gap query: %q", what, got)
			}
			if gap >= held.Milliseconds()-20 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: a thread ran while the process was stopped: longest pause of the worker %d ms, stopped for %v", what, gap, held)
			}
		}
	}

	// A thread inside a function the update replaces cannot leave it
	// while the process is stopped: apply retries (letting the process
	// "run", which must keep it stopped) until its deadline, refuses with
	// exit 4, and no thread ran meanwhile.
	p.want("h", "holding")
	since := stop()
	r := run(t, "apply", "--deadline", "1s", "--pid", p.pid(), upd["fix"])
	refused(t, "apply while stopped inside hold", r, 4, "hold")
	stillStopped("refused apply")
	wantShow(t, p.pid())
	cont("refused apply", since, "")
	p.want("e", "released")
	p.want("x", "a=1 b=10")

	since = stop()
	time.Sleep(200 * time.Millisecond)
	p.send("x") // read only once the process continues
	mustRun(t, "apply", "--pid", p.pid(), upd["fix"])
	stillStopped("apply")
	wantShow(t, p.pid(), "fix")
	cont("apply", since, "a=2 b=10")

	since = stop()
	time.Sleep(200 * time.Millisecond)
	p.send("x")
	mustRun(t, "undo", "--pid", p.pid(), "fix")
	stillStopped("undo")
	wantShow(t, p.pid())
	cont("undo", since, "a=1 b=10")
}

// 4. Threads blocked in read(), nanosleep() and pthread_cond_wait():
// attaching, injecting system calls on one of them and stopping them all
// must be invisible: no call fails with EINTR (the program prints it and
// exits), no sleep returns early, and no sleep is held up for long. The
// thread livesplice keeps for its own system calls is the leader; it is
// the reader (read restarts with ERESTARTSYS) or the sleeper (nanosleep
// restarts through restart_syscall).
func TestHostileBlockingSyscalls(t *testing.T) {
	slow(t)
	needRoot(t)
	dir, upd := setup(t, "blocking", "", "fix.patch")
	for _, role := range []string{"read", "sleep"} {
		t.Run("leader-"+role, func(t *testing.T) {
			p := start(t, dir, "./prog", role)
			queries := int64(0)
			var lastSleeps int64
			var last string
			check := func(what string, value int) {
				t.Helper()
				time.Sleep(20 * time.Millisecond)
				select { // the program reports a failure unasked, then exits
				case l, ok := <-p.lines:
					t.Fatalf("%s: program said %q unasked (closed: %v)", what, l, !ok)
				default:
				}
				queries++
				got := p.query("x")
				var v int
				var sleeps, early, late, wakes int64
				if _, err := fmt.Sscanf(got, "value=%d sleeps=%d early=%d maxlate_us=%d wakes=%d", &v, &sleeps, &early, &late, &wakes); err != nil {
					t.Fatalf("%s: program said %q", what, got)
				}
				if v != value || early != 0 || wakes != queries || late > 500_000 {
					t.Fatalf("%s: want value=%d, no early sleep, lateness < 500 ms, %d wakes: got %q", what, value, queries, got)
				}
				if sleeps <= lastSleeps && queries > 1 {
					t.Fatalf("%s: the sleeper stopped sleeping: %q", what, got)
				}
				lastSleeps = sleeps
				last = got
			}
			check("before", 1)
			for i := 0; i < 5; i++ {
				time.Sleep(50 * time.Millisecond) // every thread back in its call
				mustRun(t, "apply", "--pid", p.pid(), upd["fix"])
				check(fmt.Sprintf("round %d: apply", i), 2)
				time.Sleep(50 * time.Millisecond)
				mustRun(t, "undo", "--pid", p.pid(), "fix")
				check(fmt.Sprintf("round %d: undo", i), 1)
			}
			p.alive()
			t.Logf("finally: %s", last)
		})
	}
}

// startExiting starts a program that exits by itself. A reaped one is
// waited for at once, as a shell would; an unreaped one stays a zombie
// until the test ends, so its pid cannot be reused and may be patched
// again after it died.
func startExiting(t *testing.T, dir, mode string, reap bool) (*exec.Cmd, chan struct{}) {
	t.Helper()
	cmd := exec.Command("./prog", mode)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reaped := make(chan struct{})
	if reap {
		go func() { cmd.Wait(); close(reaped) }()
	}
	t.Cleanup(func() {
		cmd.Process.Kill() // only the program this test started, by pid
		if !reap {
			cmd.Wait()
		}
		<-reaped
	})
	if !reap {
		close(reaped) // never reaped before the end: nothing to wait for
	}
	return cmd, reaped
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// gone reports whether process pid has ended: no longer listed, or a
// zombie leader left alone (a leader that called pthread_exit is a zombie
// too, while its other threads live on).
func gone(pid string) bool {
	st := procField(pid, pid, "State")
	if st == "" {
		return true
	}
	ents, _ := os.ReadDir("/proc/" + pid + "/task")
	return (strings.HasPrefix(st, "Z") || strings.HasPrefix(st, "X")) && len(ents) <= 1
}

// 5. A process that exits while it is patched, at a random moment (from
// its main thread, or from a worker after the main thread left), reaped
// at once or left a zombie: every apply or undo ends within 15 s, and
// one that fails says in one line that the process is gone (exit 1).
func TestHostileExitDuringApply(t *testing.T) {
	slow(t)
	needRoot(t)
	dir, upd := setup(t, "exiting", "", "fix.patch")
	const limit = 15 * time.Second
	failures := map[string]int{}
	for i := 0; i < 12; i++ {
		mode := []string{"main", "thread"}[i%2]
		reap := i/2%2 == 0
		cmd, reaped := startExiting(t, dir, mode, reap)
		pid := strconv.Itoa(cmd.Process.Pid)
		time.Sleep(10 * time.Millisecond)
		applied := false
		for n := 0; ; n++ {
			if reap && isClosed(reaped) {
				break // reaped: its pid may be reused, leave it alone
			}
			if !reap && gone(pid) {
				// A zombie (its pid stays ours): patching it must fail
				// cleanly.
				r, _, err := invoke(limit, livesplice, "apply", "--pid", pid, upd["fix"])
				if err != nil {
					t.Fatal(err)
				}
				refused(t, "apply to a zombie", r, 1, "exited")
				failures[strings.TrimSpace(r.stderr)]++
				break
			}
			if n > 500 {
				t.Fatalf("program %s (%s) did not exit", pid, mode)
			}
			args := []string{"apply", "--pid", pid, upd["fix"]}
			if applied {
				args = []string{"undo", "--pid", pid, "fix"}
			}
			r, took, err := invoke(limit, append([]string{livesplice}, args...)...)
			if err != nil {
				t.Fatalf("program %d (%s): %v", i, mode, err)
			}
			if r.exit == 0 {
				applied = !applied
				continue
			}
			what := fmt.Sprintf("program %d (%s, reaped %v): %s after %v", i, mode, reap, args[0], took.Round(time.Millisecond))
			if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine") {
				t.Fatalf("%s: %s", what, r.stderr)
			}
			failures[strings.TrimSpace(r.stderr)]++
			for deadline := time.Now().Add(2 * time.Second); !gone(pid) && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond) // its threads finish exiting
			}
			if !gone(pid) {
				t.Fatalf("%s failed but the process lives: %s", what, r.stderr)
			}
			// The failure must say why: the process is gone.
			refused(t, what, r, 1)
			if !strings.Contains(r.stderr, "exited") && !strings.Contains(r.stderr, "no such process") {
				t.Fatalf("%s: does not say the process is gone: %s", what, r.stderr)
			}
		}
	}
	for msg, n := range failures {
		t.Logf("%dx %s", n, msg)
	}
}

// 6. A process whose threads fork children without pause, each child
// calling the patched function: apply and undo while it forks. Every
// child gives the old or the new result and exits normally, the parent
// keeps working. A child forked after apply is patched: fork copies the
// address space, the trampolines written into the (copy-on-write) code
// pages and the new code's private mapping included; likewise a child
// forked after undo is not (both asserted: every child forked after the
// command returned gives its version). Children are not traced (livesplice traces
// clones of threads, not forks), and one forked while the process is
// stopped for the splice cannot exist: the fork is then either finished,
// with the old image, or not yet begun.
func TestHostileForkDuringApply(t *testing.T) {
	slow(t)
	needRoot(t)
	dir, upd := setup(t, "forking", "", "fix.patch")
	p := start(t, dir, "./prog")
	type status struct{ f, children, old, new, bad, sinceOld, sinceNew int64 }
	get := func(what string) status {
		t.Helper()
		got := p.query("x")
		var s status
		if _, err := fmt.Sscanf(got, "f=%d children=%d old=%d new=%d bad=%d since_old=%d since_new=%d",
			&s.f, &s.children, &s.old, &s.new, &s.bad, &s.sinceOld, &s.sinceNew); err != nil {
			t.Fatalf("%s: program said %q", what, got)
		}
		if s.bad != 0 {
			t.Fatalf("%s: a child gave a wrong result or died: %q", what, got)
		}
		return s
	}
	// settle marks the moment after the last command: every child forked
	// from then on (a few from each forking thread) must give want, and so
	// must the parent.
	settle := func(what string, want int64) {
		t.Helper()
		p.want("m", "marked")
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(2 * time.Millisecond) {
			s := get(what)
			if s.sinceOld+s.sinceNew >= 4 {
				if (want == 22 && s.sinceNew != 0) || (want == 23 && s.sinceOld != 0) || s.f != want {
					t.Fatalf("%s: want f=%d from the parent and every child forked since: %+v", what, want, s)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the threads stopped forking: %+v", what, s)
			}
		}
	}
	settle("before", 22)
	for i := 0; i < 10; i++ {
		mustRun(t, "apply", "--pid", p.pid(), upd["fix"])
		settle(fmt.Sprintf("round %d: apply", i), 23)
		mustRun(t, "undo", "--pid", p.pid(), "fix")
		settle(fmt.Sprintf("round %d: undo", i), 22)
	}
	s := get("end")
	if s.old == 0 || s.new == 0 {
		t.Fatalf("children never saw both versions: %+v", s)
	}
	t.Logf("%d children: %d old, %d new", s.children, s.old, s.new)
}

// lstest returns the uid and gid of the unprivileged test user, creating
// it (without a home) if missing.
func lstest(t *testing.T) (string, string) {
	t.Helper()
	u, err := user.Lookup("lstest")
	if err != nil {
		if _, err := exec.LookPath("useradd"); err != nil {
			t.Skip("no user lstest and no useradd to create it")
		}
		if out, err := exec.Command("useradd", "-M", "-s", "/bin/sh", "lstest").CombinedOutput(); err != nil {
			t.Skipf("useradd lstest: %v: %s", err, out)
		}
		if u, err = user.Lookup("lstest"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("no setpriv to run as lstest")
	}
	return u.Uid, u.Gid
}

// ptraceScope returns the Yama ptrace scope, 0 without Yama.
func ptraceScope() int {
	b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope")
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// 7. Least privilege: livesplice run by an ordinary user patches that
// user's process (it cannot open /proc/PID/map_files, which needs
// CAP_SYS_ADMIN, and must read the mapped files another way), and is
// refused with exit 7 on a process of root.
func TestHostileUnprivileged(t *testing.T) {
	slow(t)
	needRoot(t)
	uid, gid := lstest(t)
	// Everything the user needs, readable and executable by it.
	world, err := os.MkdirTemp("", "livesplice-lstest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(world) })
	if err := os.Chmod(world, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(world, "livesplice")
	sh(t, world, "cp "+livesplice+" "+bin+" && chmod 755 "+bin)
	dir, upd := setup(t, "answer", filepath.Join(world, "run"), "fix.patch")
	sh(t, dir, "chmod -R a+rX .")
	as := []string{"setpriv", "--reuid=" + uid, "--regid=" + gid, "--init-groups", bin}
	runAs := func(args ...string) result {
		t.Helper()
		r, _, err := invoke(30*time.Second, append(slices.Clone(as), args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	t.Run("own process", func(t *testing.T) {
		p := start(t, dir, "setpriv", "--reuid="+uid, "--regid="+gid, "--init-groups", "./prog")
		p.want("x", "a=1 b=10")
		if st := procField(p.pid(), p.pid(), "Uid"); !strings.HasPrefix(st, uid+"\t") {
			t.Fatalf("target runs as %q, want uid %s", st, uid)
		}
		r := runAs("apply", "--pid", p.pid(), upd["fix"])
		if scope := ptraceScope(); scope != 0 {
			// Yama forbids tracing a non-descendant without privilege.
			refused(t, fmt.Sprintf("apply with ptrace_scope %d", scope), r, 7, "not permitted")
			p.want("x", "a=1 b=10")
			return
		}
		if r.exit != 0 {
			t.Fatalf("apply as uid %s to its own process: exit %d: %s", uid, r.exit, r.stderr)
		}
		p.want("x", "a=2 b=10")
		r = runAs("show", "--pid", p.pid(), "--json")
		if r.exit != 0 {
			t.Fatalf("show as uid %s: exit %d: %s", uid, r.exit, r.stderr)
		}
		if got := parseShow(t, r.stdout); !slices.Equal(got, []string{"fix"}) {
			t.Fatalf("show as uid %s: %v", uid, got)
		}
		if r = runAs("undo", "--pid", p.pid(), "fix"); r.exit != 0 {
			t.Fatalf("undo as uid %s: exit %d: %s", uid, r.exit, r.stderr)
		}
		p.want("x", "a=1 b=10")
		wantShow(t, p.pid())
	})

	t.Run("root's process", func(t *testing.T) {
		p := start(t, dir, "./prog")
		p.want("x", "a=1 b=10")
		r := runAs("apply", "--pid", p.pid(), upd["fix"])
		refused(t, "apply as uid "+uid+" to root's process", r, 7, "not permitted", "run as root")
		p.want("x", "a=1 b=10")
		// Root applies; the user may neither see nor undo it.
		mustRun(t, "apply", "--pid", p.pid(), upd["fix"])
		r = runAs("undo", "--pid", p.pid(), "fix")
		refused(t, "undo as uid "+uid+" from root's process", r, 7, "not permitted", "run as root")
		r = runAs("show", "--pid", p.pid())
		refused(t, "show as uid "+uid+" of root's process", r, 7, "process "+p.pid(), "not permitted", "run as root")
		p.want("x", "a=2 b=10")
		wantShow(t, p.pid(), "fix")
	})
}
