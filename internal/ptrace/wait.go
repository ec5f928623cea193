package ptrace

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"livesplice/internal/procfs"
)

// ptrace issues one raw ptrace request. x/sys wraps neither PTRACE_SEIZE
// with options nor PTRACE_DETACH/CONT with a signal everywhere we need it.
func ptrace(req, tid int, addr, data uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), addr, data, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func (p *Process) getRegs(tid int, r *unix.PtraceRegs) error {
	if err := unix.PtraceGetRegs(tid, r); err != nil {
		return fmt.Errorf("ptrace getregs tid %d: %w", tid, err)
	}
	return nil
}

func (p *Process) setRegs(tid int, r *unix.PtraceRegs) error {
	if err := unix.PtraceSetRegs(tid, r); err != nil {
		return fmt.Errorf("ptrace setregs tid %d: %w", tid, err)
	}
	return nil
}

func getSiginfo(tid int) (unix.Siginfo, error) {
	var si unix.Siginfo
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_GETSIGINFO, uintptr(tid), 0, uintptr(unsafe.Pointer(&si)), 0, 0)
	if e != 0 {
		return si, e
	}
	return si, nil
}

func setSiginfo(tid int, si *unix.Siginfo) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SETSIGINFO, uintptr(tid), 0, uintptr(unsafe.Pointer(si)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// event is one wait4 report. gone means the thread vanished without an
// exit status we could collect (ECHILD, or a zombie group leader whose
// exit the kernel delays until the other threads are gone).
type event struct {
	tid  int
	ws   unix.WaitStatus
	gone bool
}

var errWaitTimeout = fmt.Errorf("wait: %w", ErrTimeout)

// poll calls try until it reports done, sleeping between tries (20 µs
// at first, doubling to 2 ms: a stop usually comes within a few), or
// until deadline (errWaitTimeout). Polling, not a blocking wait4, so that
// the deadline holds.
func poll(deadline time.Time, try func() (bool, error)) error {
	sleep := 20 * time.Microsecond
	for {
		if done, err := try(); done || err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return errWaitTimeout
		}
		time.Sleep(sleep)
		sleep = min(sleep*2, 2*time.Millisecond)
	}
}

// waitAny waits until one of tids reports. It polls with WNOHANG on each
// tid: a blocking wait4 could not honour a deadline, and wait4(-1) would
// reap children that belong to the rest of the program.
func (p *Process) waitAny(tids []int, deadline time.Time) (event, error) {
	var ev event
	lastCheck := time.Now()
	err := poll(deadline, func() (bool, error) {
		for _, tid := range tids {
			var ws unix.WaitStatus
			got, err := unix.Wait4(tid, &ws, unix.WNOHANG|unix.WALL, nil)
			switch {
			case err == unix.EINTR:
			case err == unix.ECHILD:
				ev = event{tid: tid, gone: true}
				return true, nil
			case err != nil:
				return false, fmt.Errorf("wait4 tid %d: %w", tid, err)
			case got == tid:
				ev = event{tid: tid, ws: ws}
				return true, nil
			}
		}
		// A group leader that exited before its threads stays a zombie
		// that reports nothing: notice it rather than wait for ever.
		if now := time.Now(); now.Sub(lastCheck) > 20*time.Millisecond {
			lastCheck = now
			for _, tid := range tids {
				if tid == p.pid && p.isZombie(tid) {
					var ws unix.WaitStatus
					if got, _ := unix.Wait4(tid, &ws, unix.WNOHANG|unix.WALL, nil); got == tid {
						ev = event{tid: tid, ws: ws}
					} else {
						ev = event{tid: tid, gone: true}
					}
					return true, nil
				}
			}
		}
		return false, nil
	})
	return ev, err
}

func (p *Process) isZombie(tid int) bool {
	st, err := readStatus(fmt.Sprintf("/proc/%d/task/%d/status", p.pid, tid))
	if err != nil {
		return true
	}
	s := st["State"]
	return len(s) > 0 && (s[0] == 'Z' || s[0] == 'X')
}

type stopKind int

const (
	kindNone    stopKind = iota // not a stop (e.g. a continue report)
	kindExit                    // the thread is gone
	kindSignal                  // signal-delivery-stop
	kindClone                   // PTRACE_EVENT_CLONE stop
	kindEvent                   // PTRACE_EVENT_STOP: interrupt, group-stop, initial stop
	kindSyscall                 // syscall-entry or -exit stop (only while injecting)
)

// note records what ev says about its thread and classifies it. It does
// not record signals: whether a SIGTRAP is ours is for the caller to say.
func (p *Process) note(ev event) (stopKind, int) {
	t := p.threads[ev.tid]
	if ev.gone || ev.ws.Exited() || ev.ws.Signaled() {
		delete(p.threads, ev.tid)
		return kindExit, 0
	}
	if !ev.ws.Stopped() || t == nil {
		return kindNone, 0
	}
	t.stopped = true
	t.interrupted = false
	t.sigStop = false
	t.eventStop = false
	sig := int(ev.ws.StopSignal())
	switch int(ev.ws>>16) & 0xff {
	case 0:
		if sig == int(unix.SIGTRAP)|0x80 {
			return kindSyscall, sig // PTRACE_O_TRACESYSGOOD: a syscall stop
		}
		t.sigStop = true
		return kindSignal, sig
	case unix.PTRACE_EVENT_CLONE:
		if msg, err := unix.PtraceGetEventMsg(ev.tid); err == nil && msg != 0 {
			child := int(msg)
			if _, ok := p.threads[child]; !ok {
				// Attached by the kernel; it reports its own initial stop.
				p.threads[child] = &thread{tid: child, interrupted: true}
			}
		}
		return kindClone, sig
	case unix.PTRACE_EVENT_STOP:
		t.eventStop = true
		t.groupStopped = isStopSignal(sig)
		return kindEvent, sig
	}
	return kindEvent, sig
}

func isStopSignal(sig int) bool {
	switch unix.Signal(sig) {
	case unix.SIGSTOP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU:
		return true
	}
	return false
}

// recordSignal keeps a signal that stopped t, to deliver it on resume.
func (p *Process) recordSignal(t *thread, sig int) {
	ps := pendingSig{sig: sig}
	if si, err := getSiginfo(t.tid); err == nil && int(si.Signo) == sig {
		ps.info, ps.ok = si, true
	}
	t.pending = append(t.pending, ps)
}

// isFault reports whether a stop is a synchronous fault raised by the
// kernel for the instruction the thread executes (si_code > 0): ignoring
// it would only re-execute the faulting instruction.
func isFault(tid, sig int) bool {
	switch unix.Signal(sig) {
	case unix.SIGSEGV, unix.SIGBUS, unix.SIGILL, unix.SIGFPE, unix.SIGTRAP:
	default:
		return false
	}
	si, err := getSiginfo(tid)
	return err == nil && si.Code > 0
}

// stopAll interrupts every running thread and waits for all to stop.
func (p *Process) stopAll(deadline time.Time) error {
	spinStart := time.Now()
	for {
		var running []int
		for _, t := range p.threads {
			if t.stopped {
				continue
			}
			running = append(running, t.tid)
			if !t.interrupted {
				if err := ptrace(unix.PTRACE_INTERRUPT, t.tid, 0, 0); err != nil && err != unix.ESRCH {
					return fmt.Errorf("ptrace interrupt tid %d: %w", t.tid, err)
				}
				// ESRCH: it is exiting; its exit status will come.
				t.interrupted = true
			}
		}
		if len(running) == 0 {
			if len(p.threads) == 0 {
				return ErrExited
			}
			return nil
		}
		sort.Ints(running)
		// Collect every stop already reported before waiting: the live
		// patcher's pause is mostly this loop.
		got := 0
		for _, tid := range running {
			var ws unix.WaitStatus
			if n, err := unix.Wait4(tid, &ws, unix.WNOHANG|unix.WALL, nil); err == nil && n == tid {
				p.absorb(event{tid: tid, ws: ws})
				got++
			}
		}
		if got > 0 {
			continue
		}
		// Stops after PTRACE_INTERRUPT come within microseconds: poll
		// without sleeping for a moment before waitAny's back-off.
		if time.Since(spinStart) < 3*time.Millisecond {
			runtime.Gosched()
			continue
		}
		ev, err := p.waitAny(running, deadline)
		if err != nil {
			return fmt.Errorf("%d threads did not stop: %w", len(running), err)
		}
		p.absorb(ev)
	}
}

// absorb handles a report outside of a run of our own code.
func (p *Process) absorb(ev event) {
	switch kind, sig := p.note(ev); kind {
	case kindSignal:
		p.recordSignal(p.threads[ev.tid], sig)
	case kindClone:
		// Stopped inside clone(2): its registers are not final (the
		// kernel stores the return value after this stop), so code
		// injected here would be clobbered. Let it finish the call and
		// stop again on its way back to user space.
		t := p.threads[ev.tid]
		if ptrace(unix.PTRACE_INTERRUPT, t.tid, 0, 0) == nil && ptrace(unix.PTRACE_CONT, t.tid, 0, 0) == nil {
			t.stopped = false
			t.interrupted = true
		}
	}
}

// exitedErr turns err into one wrapping ErrExited if it is ESRCH and the
// thread tid turns out to be gone: a SIGKILL wakes threads from their
// ptrace-stop, so a "stopped" thread can vanish under us at any time.
func (p *Process) exitedErr(op string, tid int, err error) error {
	if err == nil || !errors.Is(err, unix.ESRCH) {
		return err
	}
	// The thread may still be on its way out; give it a moment.
	deadline := time.Now().Add(time.Second)
	for {
		for _, t := range p.threads {
			var ws unix.WaitStatus
			got, werr := unix.Wait4(t.tid, &ws, unix.WNOHANG|unix.WALL, nil)
			if werr == unix.ECHILD {
				p.absorb(event{tid: t.tid, gone: true})
			} else if got == t.tid {
				p.absorb(event{tid: t.tid, ws: ws})
			}
		}
		if _, ok := p.threads[tid]; !ok {
			return fmt.Errorf("ptrace %s tid %d: %w (%v)", op, tid, ErrExited, err)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}

// cont restarts t without a signal, for the tracer's own purposes.
func (p *Process) cont(t *thread, req int) error {
	if err := ptrace(req, t.tid, 0, 0); err != nil {
		if err == unix.ESRCH {
			// Killed while stopped: let the next wait collect its exit.
			t.stopped = false
			return nil
		}
		return fmt.Errorf("ptrace %s tid %d: %w", reqName(req), t.tid, err)
	}
	t.stopped = false
	return nil
}

func reqName(req int) string {
	switch req {
	case unix.PTRACE_CONT:
		return "cont"
	case unix.PTRACE_SINGLESTEP:
		return "singlestep"
	case unix.PTRACE_LISTEN:
		return "listen"
	case unix.PTRACE_DETACH:
		return "detach"
	}
	return strconv.Itoa(req)
}

// takeSignals prepares t's held-back signals for a restart: it returns
// the signal to pass to PTRACE_CONT/DETACH and re-queues the others with
// tgkill. Only a signal-delivery-stop can inject a signal, so from any
// other stop all of them are re-queued.
func (p *Process) takeSignals(t *thread) int {
	pend := t.pending
	t.pending = nil
	sig := 0
	if t.sigStop && len(pend) > 0 {
		first := pend[0]
		pend = pend[1:]
		// The current stop may be for another signal:
		// give back the original siginfo so the handler sees it.
		if first.ok {
			setSiginfo(t.tid, &first.info)
		}
		sig = first.sig
	}
	for _, ps := range pend {
		p.requeue(t.tid, ps)
	}
	return sig
}

// requeue sends a held-back signal to tid again. rt_tgsigqueueinfo keeps
// the siginfo where the kernel allows it (si_code < 0 and not SI_TKILL);
// otherwise tgkill, which makes us the sender.
func (p *Process) requeue(tid int, ps pendingSig) {
	const siTkill = -6
	if ps.ok && ps.info.Code < 0 && ps.info.Code != siTkill {
		_, _, e := unix.Syscall6(unix.SYS_RT_TGSIGQUEUEINFO, uintptr(p.pid), uintptr(tid), uintptr(ps.sig), uintptr(unsafe.Pointer(&ps.info)), 0, 0)
		if e == 0 {
			return
		}
	}
	unix.Tgkill(p.pid, tid, unix.Signal(ps.sig))
}

// resumeThread continues t, delivering its held-back signals. A thread in
// group-stop is restarted with PTRACE_LISTEN so the process stays stopped.
func (p *Process) resumeThread(t *thread) error {
	if t.groupStopped && !t.eventStop {
		// Last stopped by us (an injected call) while the process is in
		// group-stop: PTRACE_LISTEN needs an event stop, so trap into
		// one first. The pending interrupt fires before any user code.
		// Held-back signals stay held: they are re-queued below.
		if err := ptrace(unix.PTRACE_INTERRUPT, t.tid, 0, 0); err == nil {
			if err := ptrace(unix.PTRACE_CONT, t.tid, 0, 0); err == nil {
				t.stopped = false
				t.interrupted = true
				ev, err := p.waitAny([]int{t.tid}, time.Now().Add(stopTimeout))
				if err != nil {
					return fmt.Errorf("ptrace resume tid %d: %w", t.tid, err)
				}
				kind, sig := p.note(ev)
				switch kind {
				case kindExit:
					return nil
				case kindSignal:
					p.recordSignal(t, sig)
				}
			}
		}
	}
	if t.groupStopped && t.eventStop {
		for _, ps := range t.pending {
			p.requeue(t.tid, ps)
		}
		t.pending = nil
		if err := ptrace(unix.PTRACE_LISTEN, t.tid, 0, 0); err == nil {
			t.stopped = false
			return nil
		}
	}
	sig := p.takeSignals(t)
	if err := ptrace(unix.PTRACE_CONT, t.tid, 0, uintptr(sig)); err != nil && err != unix.ESRCH {
		return fmt.Errorf("ptrace cont tid %d: %w", t.tid, err)
	}
	t.stopped = false
	return nil
}

// listTasks lists the thread ids of pid, leader first.
func listTasks(pid int) ([]int, error) {
	names, err := procfs.ReadDirNames(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, unix.ESRCH
		}
		return nil, err
	}
	var tids []int
	for _, name := range names {
		tid, err := strconv.Atoi(name)
		if err != nil || tid <= 0 {
			continue
		}
		tids = append(tids, tid)
	}
	sort.Slice(tids, func(i, j int) bool {
		if (tids[i] == pid) != (tids[j] == pid) {
			return tids[i] == pid
		}
		return tids[i] < tids[j]
	})
	return tids, nil
}

// readStatus parses a /proc status file into key -> value.
func readStatus(path string) (map[string]string, error) {
	b, err := procfs.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m, nil
}
