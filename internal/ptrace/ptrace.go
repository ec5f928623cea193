// Package ptrace stops, inspects, changes and resumes every thread of a
// running process through ptrace(2), from one locked OS thread.
//
// The kernel ties a tracee to the thread that attached it, not to the
// process: every ptrace and wait4 call for a tracee must come from that one
// thread. A Process therefore owns a goroutine locked to its OS thread and
// every method hands its work to it; or, made by AttachOneHere, it runs on
// the caller's own locked thread and every method is a plain call (a whole
// session without one goroutine hand-off per request: see Here). Memory goes through the same thread,
// because kernels built with PROC_MEM_FORCE_PTRACE only allow writes to
// read-only pages through /proc/PID/mem from the tracer itself.
//
// Between Attach and Detach, every thread of the target is either stopped
// (after Attach, Stop, and every method other than Resume) or running (after
// Resume). Threads the target creates are attached automatically
// (PTRACE_O_TRACECLONE) and stopped before a method returns. Signals the
// target receives while attached are held back and delivered again when the
// thread resumes or is detached, so the program sees every signal.
package ptrace

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"livesplice/internal/procfs"
)

var (
	// ErrTraced means another tracer (gdb, strace, ...) holds the process.
	ErrTraced = errors.New("already traced")
	// ErrTimeout means an operation did not finish in time.
	ErrTimeout = errors.New("timed out")
	// ErrExited means the process, or the thread an operation ran on, exited.
	ErrExited = errors.New("process exited")
	// ErrStalled means a chain of system calls (Syscalls) ran, but
	// livesplice took its thread back only after it had gone back to the
	// program (a machine so loaded that livesplice was not scheduled for
	// chainWait): its results are unknown, every call may have run.
	ErrStalled = errors.New("livesplice stalled")
)

// errDetached is returned by every method once Detach has run.
var errDetached = errors.New("process detached")

const (
	// stopTimeout bounds waiting for threads to stop after PTRACE_INTERRUPT.
	// A thread in uninterruptible sleep (disk I/O, vfork parent) stops late.
	stopTimeout = 5 * time.Second
	// attachTimeout bounds the whole attach, which may chase thread churn.
	attachTimeout = 10 * time.Second
	// syscallTimeout bounds an injected system call; Syscall has no timeout
	// argument and must not hang forever if the call blocks.
	syscallTimeout = 10 * time.Second
	// defaultCallTimeout is used by Call when given a timeout <= 0.
	defaultCallTimeout = 5 * time.Second
)

// Process is a traced process. Its methods may be called from any
// goroutine; they are serialised on the tracer thread. Always call Detach:
// it releases the process and the tracer thread.
type Process struct {
	pid  int
	reqs chan func()
	quit chan struct{}
	// inline: the caller's thread is the tracer (AttachOneHere); methods
	// run directly and refuse calls from any other thread.
	inline bool

	// The fields below are only touched on the tracer thread.
	tracerTid int
	threads   map[int]*thread
	// memFd is /proc/PID/task/memTid/mem, read and write, or -1. A raw
	// descriptor: an os.File costs four more system calls to open and two
	// on every Fd.
	memFd int
	// rmem is a read-only handle any goroutine may read through without
	// a round trip to the tracer thread (reads need no tracer).
	rmem   atomic.Pointer[os.File]
	memTid int
	entry  uint64 // AT_ENTRY, cached; 0 until read
	closed bool
	// untracedClones: ResumeExcept turned off clone tracing on running
	// threads; Stop must look for threads created since.
	untracedClones bool
	// kept is the thread AttachOne or ResumeExcept left stopped while the
	// others run (0: none). If it vanishes the process is exiting.
	kept int
}

// thread is the tracer's view of one attached thread.
type thread struct {
	tid int
	// stopped: the thread is in a ptrace-stop and may be inspected.
	stopped bool
	// interrupted: PTRACE_INTERRUPT was sent (or the initial stop of an
	// auto-attached thread is due) and no stop was seen since.
	interrupted bool
	// sigStop: the last stop is a signal-delivery-stop, the only kind of
	// stop from which a restart can inject a signal.
	sigStop bool
	// eventStop: the last stop is a PTRACE_EVENT_STOP, from which
	// PTRACE_LISTEN is allowed.
	eventStop bool
	// groupStopped: the last PTRACE_EVENT_STOP reported a stop signal: the
	// process is in group-stop (SIGSTOP, SIGTSTP, ...) and must stay so.
	groupStopped bool
	// pending holds signals that arrived while we held the thread; they
	// are delivered again on resume or detach.
	pending []pendingSig
}

type pendingSig struct {
	sig  int
	info unix.Siginfo
	ok   bool // info was read
}

// Attach stops every thread of process pid and returns it stopped. If any
// step fails, threads already attached are detached again, so the process
// continues unchanged.
func Attach(pid int) (*Process, error) {
	p, err := newProcess(pid, false)
	if err != nil {
		return nil, err
	}
	if err := p.do("attach", p.attach); err != nil {
		p.do("attach", func() error { p.shutdown(); return nil })
		return nil, err
	}
	return p, nil
}

// newProcess checks pid and starts the tracer thread, or with inline takes
// the calling thread as the tracer.
func newProcess(pid int, inline bool) (*Process, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("ptrace attach pid %d: invalid pid", pid)
	}
	if pid == os.Getpid() {
		return nil, fmt.Errorf("ptrace attach pid %d: refusing to trace the calling process", pid)
	}
	st, err := readStatus(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("ptrace attach pid %d: %w", pid, unix.ESRCH)
		}
		return nil, fmt.Errorf("ptrace attach pid %d: %w", pid, err)
	}
	if tgid, ok := st["Tgid"]; ok && tgid != fmt.Sprint(pid) {
		return nil, fmt.Errorf("ptrace attach pid %d: is a thread of process %s, not a process", pid, tgid)
	}
	p := &Process{
		pid:     pid,
		reqs:    make(chan func()),
		quit:    make(chan struct{}),
		threads: map[int]*thread{},
		inline:  inline,
		memFd:   -1,
	}
	if inline {
		p.tracerTid = unix.Gettid()
		return p, nil
	}
	ready := make(chan int)
	go p.serve(ready)
	p.tracerTid = <-ready
	return p, nil
}

// serve runs the closures of one Process on a locked OS thread.
func (p *Process) serve(ready chan<- int) {
	// Never unlocked: when this goroutine returns the runtime ends the OS
	// thread, and the kernel detaches whatever tracee is still attached to
	// it, so nothing stays traced by a thread nobody serves.
	runtime.LockOSThread()
	ready <- unix.Gettid()
	for {
		select {
		case f := <-p.reqs:
			f()
		case <-p.quit:
			return
		}
	}
}

// do runs f on the tracer thread and returns its error.
func (p *Process) do(op string, f func() error) error {
	if p.inline {
		return p.doHere(op, f)
	}
	errc := make(chan error, 1)
	run := func() {
		defer func() {
			if r := recover(); r != nil {
				errc <- fmt.Errorf("ptrace %s pid %d: internal error: %v", op, p.pid, r)
			}
		}()
		if p.closed {
			errc <- fmt.Errorf("ptrace %s pid %d: %w", op, p.pid, errDetached)
			return
		}
		errc <- f()
	}
	select {
	case p.reqs <- run:
		return <-errc
	case <-p.quit:
		return fmt.Errorf("ptrace %s pid %d: %w", op, p.pid, errDetached)
	}
}

// doHere runs f on the calling thread, which must be the tracer.
func (p *Process) doHere(op string, f func() error) (err error) {
	if tid := unix.Gettid(); tid != p.tracerTid {
		return fmt.Errorf("ptrace %s pid %d: called on thread %d, not on the tracer thread %d", op, p.pid, tid, p.tracerTid)
	}
	if p.closed {
		return fmt.Errorf("ptrace %s pid %d: %w", op, p.pid, errDetached)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("ptrace %s pid %d: internal error: %v", op, p.pid, r)
		}
	}()
	return f()
}

// Here runs f on a new goroutine locked to its own OS thread, and waits
// for it: the thread on which AttachOneHere may be called. The thread is
// never unlocked, so it ends with f, and the kernel detaches whatever f
// left attached.
func Here(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer func() {
			if r := recover(); r != nil {
				errc <- fmt.Errorf("internal error: %v", r)
			}
		}()
		errc <- f()
	}()
	return <-errc
}

// shutdown ends the tracer goroutine. Runs on the tracer thread.
func (p *Process) shutdown() {
	if p.closed {
		return
	}
	p.closed = true
	if p.memFd >= 0 {
		unix.Close(p.memFd)
		p.memFd = -1
	}
	if f := p.rmem.Swap(nil); f != nil {
		f.Close()
	}
	close(p.quit)
}

// AttachOne seizes every thread of process pid but stops only one: the
// first thread blocked in a system call (holding it is invisible to the
// program), else the leader. The rest runs on, so the caller can prepare
// with Syscall on the stopped thread and stop the whole process with Stop
// only for a moment. Threads created before Stop are found by Stop.
func AttachOne(pid int) (*Process, error) {
	return attachOne(pid, false)
}

// AttachOneHere is AttachOne with the calling thread as the tracer: the
// caller must be locked to its OS thread (runtime.LockOSThread, or inside
// Here), stay locked while attached, and call every method of the Process
// from that thread. Requests are then plain calls, not hand-offs to another
// thread, which is most of the cost of a session on a busy machine.
func AttachOneHere(pid int) (*Process, error) {
	return attachOne(pid, true)
}

func attachOne(pid int, inline bool) (*Process, error) {
	p, err := newProcess(pid, inline)
	if err != nil {
		return nil, err
	}
	if err := p.do("attach", p.attachOne); err != nil {
		p.do("attach", func() error { p.shutdown(); return nil })
		return nil, err
	}
	return p, nil
}

func (p *Process) attachOne() (err error) {
	defer func() {
		if err != nil {
			p.detachAll()
		}
	}()
	tids, err := listTasks(p.pid)
	if err != nil {
		return fmt.Errorf("ptrace attach pid %d: %w", p.pid, err)
	}
	p.untracedClones = true
	for _, tid := range tids {
		if _, err := p.seizeRunning(tid); err != nil {
			return err
		}
	}
	keep := 0
	for _, tid := range tids {
		if _, ok := p.threads[tid]; ok && inSyscall(p.pid, tid) {
			keep = tid
			break
		}
	}
	if keep == 0 {
		for _, tid := range tids {
			if _, ok := p.threads[tid]; ok {
				keep = tid
				break
			}
		}
	}
	if keep == 0 {
		return fmt.Errorf("ptrace attach pid %d: %w", p.pid, ErrExited)
	}
	t := p.threads[keep]
	if err := ptrace(unix.PTRACE_INTERRUPT, keep, 0, 0); err != nil {
		return fmt.Errorf("ptrace interrupt tid %d: %w", keep, err)
	}
	t.interrupted = true
	p.kept = keep
	deadline := time.Now().Add(stopTimeout)
	for !t.stopped {
		ev, err := p.waitAny([]int{keep}, deadline)
		if err != nil {
			return fmt.Errorf("ptrace attach pid %d: thread %d did not stop: %w", p.pid, keep, err)
		}
		p.absorb(ev)
		if _, ok := p.threads[keep]; !ok {
			return fmt.Errorf("ptrace attach pid %d: thread %d: %w", p.pid, keep, ErrExited)
		}
	}
	return p.openMem()
}

// inSyscall reports whether a thread sleeps inside a system call.
func inSyscall(pid, tid int) bool {
	b, err := procfs.ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", pid, tid))
	if err != nil || len(b) == 0 {
		return false
	}
	f := string(b)
	return f[0] >= '0' && f[0] <= '9'
}

// seizeRunning attaches one thread without stopping it and without
// tracing its clones (see AttachOne).
func (p *Process) seizeRunning(tid int) (bool, error) {
	err := ptrace(unix.PTRACE_SEIZE, tid, 0, 0)
	switch err {
	case nil:
		p.threads[tid] = &thread{tid: tid}
		return true, nil
	case unix.ESRCH:
		return false, nil
	}
	return p.seize(tid) // reports EPERM (another tracer, zombie) as seize does
}

// attach seizes every thread, chasing threads created or ended meanwhile.
func (p *Process) attach() (err error) {
	defer func() {
		if err != nil {
			p.detachAll()
		}
	}()
	if err := p.catchAll(time.Now().Add(attachTimeout)); err != nil {
		return err
	}
	if len(p.threads) == 0 {
		return fmt.Errorf("ptrace attach pid %d: %w", p.pid, ErrExited)
	}
	return p.openMem()
}

// catchAll seizes every thread not yet attached and stops them all,
// chasing threads created or ended meanwhile.
func (p *Process) catchAll(deadline time.Time) error {
	for {
		// Interrupt the threads we know first, listing /proc afterwards:
		// they stop while we look for new ones.
		for _, t := range p.threads {
			if !t.stopped && !t.interrupted {
				if ptrace(unix.PTRACE_INTERRUPT, t.tid, 0, 0) == nil {
					t.interrupted = true
				}
			}
		}
		tids, err := listTasks(p.pid)
		if err != nil {
			if len(p.threads) == 0 {
				return fmt.Errorf("ptrace attach pid %d: %w", p.pid, err)
			}
			return fmt.Errorf("ptrace attach pid %d: %w", p.pid, ErrExited)
		}
		added := 0
		for _, tid := range tids {
			if _, ok := p.threads[tid]; ok {
				continue
			}
			ok, err := p.seize(tid)
			if err != nil {
				return err
			}
			if ok {
				added++
			}
		}
		// Threads stopped now cannot create more; only threads that were
		// not yet attached can, so re-list until a pass finds nothing new.
		if err := p.stopAll(deadline); err != nil {
			return fmt.Errorf("ptrace attach pid %d: %w", p.pid, err)
		}
		if added == 0 && !(p.untracedClones && p.unknownTasks()) {
			// Without clone tracing (AttachOne, ResumeExcept) a thread
			// running until stopAll reached it may have made another one
			// that no clone event announces: only a listing taken with
			// every thread stopped is final.
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ptrace attach pid %d: threads keep appearing: %w", p.pid, ErrTimeout)
		}
	}
	return nil
}

// unknownTasks reports whether the process has a thread not attached.
func (p *Process) unknownTasks() bool {
	tids, err := listTasks(p.pid)
	if err != nil {
		return false
	}
	for _, tid := range tids {
		// A zombie (a leader that called pthread_exit) cannot be attached
		// and makes no threads.
		if _, ok := p.threads[tid]; !ok && !p.isZombie(tid) {
			return true
		}
	}
	return false
}

// openMem opens the memory file through an attached thread: the leader's
// /proc/PID/mem is unusable once the leader is a zombie, and kernels built
// with PROC_MEM_FORCE_PTRACE check that the file's own task is traced by
// us before writing to read-only pages.
func (p *Process) openMem() error {
	tids := p.stoppedTids()
	if len(tids) == 0 {
		return fmt.Errorf("ptrace open memory pid %d: %w", p.pid, ErrExited)
	}
	path := fmt.Sprintf("/proc/%d/task/%d/mem", p.pid, tids[0])
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("ptrace open memory pid %d: %w", p.pid, err)
	}
	if p.memFd >= 0 {
		unix.Close(p.memFd)
	}
	p.memFd, p.memTid = fd, tids[0]
	if p.rmem.Load() == nil {
		if r, err := os.Open(path); err == nil {
			p.rmem.Store(r)
		}
	}
	return nil
}

// seize attaches one thread and asks it to stop. It reports false, nil
// for a thread that is gone (or a zombie leader, which cannot be traced).
func (p *Process) seize(tid int) (bool, error) {
	err := ptrace(unix.PTRACE_SEIZE, tid, 0, unix.PTRACE_O_TRACECLONE)
	// EPERM with no tracer named and a live thread is a permission
	// problem, or a tracer (another livesplice) that let go between our
	// seize and the status read: try again before calling it permissions.
	for try := 0; err == unix.EPERM && try < 3; try++ {
		st, serr := readStatus(fmt.Sprintf("/proc/%d/task/%d/status", p.pid, tid))
		if serr != nil || st["TracerPid"] != "0" || strings.HasPrefix(st["State"], "Z") || strings.HasPrefix(st["State"], "X") {
			break
		}
		time.Sleep(time.Millisecond)
		err = ptrace(unix.PTRACE_SEIZE, tid, 0, unix.PTRACE_O_TRACECLONE)
	}
	switch err {
	case nil:
	case unix.ESRCH:
		return false, nil
	case unix.EPERM:
		st, serr := readStatus(fmt.Sprintf("/proc/%d/task/%d/status", p.pid, tid))
		if serr != nil {
			return false, nil // gone meanwhile
		}
		tracer := st["TracerPid"]
		switch {
		case tracer == fmt.Sprint(p.tracerTid):
			// Auto-attached by us through a clone event we have not read
			// yet; its own initial stop is due.
			if _, ok := p.threads[tid]; !ok {
				p.threads[tid] = &thread{tid: tid, interrupted: true}
			}
			return true, nil
		case tracer != "" && tracer != "0":
			return false, fmt.Errorf("ptrace seize tid %d: %w by pid %s%s", tid, ErrTraced, tracer, commSuffix(tracer))
		case len(st["State"]) > 0 && (st["State"][0] == 'Z' || st["State"][0] == 'X'):
			return false, nil
		}
		return false, fmt.Errorf("ptrace seize tid %d: %w", tid, err)
	default:
		return false, fmt.Errorf("ptrace seize tid %d: %w", tid, err)
	}
	p.threads[tid] = &thread{tid: tid}
	if err := ptrace(unix.PTRACE_INTERRUPT, tid, 0, 0); err != nil && err != unix.ESRCH {
		return false, fmt.Errorf("ptrace interrupt tid %d: %w", tid, err)
	}
	p.threads[tid].interrupted = true
	return true, nil
}

// commSuffix names the process pid for an error message, if it can.
func commSuffix(pid string) string {
	b, err := os.ReadFile("/proc/" + pid + "/comm")
	if err != nil || len(b) == 0 {
		return ""
	}
	return " (" + string(trimNL(b)) + ")"
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == 0) {
		b = b[:len(b)-1]
	}
	return b
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.pid }

// Threads returns the ids of the threads attached and stopped, the
// thread-group leader first if it is alive, then in increasing order.
func (p *Process) Threads() []int {
	var out []int
	p.do("threads", func() error {
		out = p.stoppedTids()
		return nil
	})
	return out
}

func (p *Process) stoppedTids() []int {
	var out []int
	for tid, t := range p.threads {
		if t.stopped && tid != p.pid {
			out = append(out, tid)
		}
	}
	slices.Sort(out)
	if t, ok := p.threads[p.pid]; ok && t.stopped {
		out = append([]int{p.pid}, out...)
	}
	return out
}

// stoppedThread returns the state of tid if it is attached and stopped.
func (p *Process) stoppedThread(op string, tid int) (*thread, error) {
	t, ok := p.threads[tid]
	if !ok {
		return nil, fmt.Errorf("ptrace %s tid %d: not an attached thread of pid %d", op, tid, p.pid)
	}
	if !t.stopped {
		return nil, fmt.Errorf("ptrace %s tid %d: thread is running", op, tid)
	}
	return t, nil
}

// GetRegs returns the registers of a stopped thread.
func (p *Process) GetRegs(tid int) (unix.PtraceRegs, error) {
	var r unix.PtraceRegs
	err := p.do("getregs", func() error {
		if _, err := p.stoppedThread("getregs", tid); err != nil {
			return err
		}
		return p.exitedErr("getregs", tid, p.getRegs(tid, &r))
	})
	return r, err
}

// AllRegs returns the registers of every stopped thread, in one trip to
// the tracer thread (the live patcher reads them all while the world is
// stopped).
func (p *Process) AllRegs() (map[int]unix.PtraceRegs, error) {
	var out map[int]unix.PtraceRegs
	err := p.do("getregs", func() (err error) {
		out, err = p.allRegsLocked()
		return err
	})
	return out, err
}

func (p *Process) allRegsLocked() (map[int]unix.PtraceRegs, error) {
	out := map[int]unix.PtraceRegs{}
	for _, tid := range p.stoppedTids() {
		var r unix.PtraceRegs
		if err := p.exitedErr("getregs", tid, p.getRegs(tid, &r)); err != nil {
			return nil, err
		}
		out[tid] = r
	}
	return out, nil
}

// SetRegs sets the registers of a stopped thread.
func (p *Process) SetRegs(tid int, r *unix.PtraceRegs) error {
	if r == nil {
		return fmt.Errorf("ptrace setregs tid %d: nil registers", tid)
	}
	regs := *r
	return p.do("setregs", func() error {
		if _, err := p.stoppedThread("setregs", tid); err != nil {
			return err
		}
		return p.exitedErr("setregs", tid, p.setRegs(tid, &regs))
	})
}

// Stop interrupts every running thread and waits until all are stopped.
// Threads created meanwhile are stopped too; threads that exited are
// dropped. It returns an error wrapping ErrExited if no thread is left.
func (p *Process) Stop() error {
	return p.do("stop", p.stopLocked)
}

// StopRegs is Stop followed by AllRegs, in one trip to the tracer thread:
// the live patcher's stop window is made of such trips.
func (p *Process) StopRegs() (map[int]unix.PtraceRegs, error) {
	var out map[int]unix.PtraceRegs
	err := p.do("stop", func() (err error) {
		if err := p.stopLocked(); err != nil {
			return err
		}
		out, err = p.allRegsLocked()
		return err
	})
	return out, err
}

// WriteMemsDetach performs writes in order and, if all succeed, detaches
// (as Detach), in one trip to the tracer thread. On a failed write it
// returns how many completed and stays attached.
func (p *Process) WriteMemsDetach(ws []Write) (int, error) {
	done := 0
	err := p.do("write memory", func() error {
		if err := p.writeMemsLocked(ws, &done); err != nil {
			return err
		}
		err := p.detachAll()
		p.shutdown()
		return err
	})
	return done, err
}

func (p *Process) stopLocked() error {
	{
		if !p.untracedClones {
			if err := p.stopAll(time.Now().Add(stopTimeout)); err != nil {
				return fmt.Errorf("ptrace stop pid %d: %w", p.pid, err)
			}
			return nil
		}
		// After AttachOne or ResumeExcept new threads are not attached
		// automatically: find them. Clone tracing stays off (every later
		// Stop looks again), which spares a system call per thread while
		// the process is stopped.
		if err := p.catchAll(time.Now().Add(attachTimeout)); err != nil {
			return fmt.Errorf("ptrace stop pid %d: %w", p.pid, err)
		}
		return nil
	}
}

// Resume continues every stopped thread, delivering the signals that
// arrived while it was stopped. A process in group-stop stays stopped.
func (p *Process) Resume() error {
	return p.do("resume", func() error {
		p.kept = 0
		var first error
		for _, tid := range p.stoppedTids() {
			if err := p.resumeThread(p.threads[tid]); err != nil && first == nil {
				first = err
			}
		}
		return first
	})
}

// ResumeExcept continues every stopped thread but keep, which stays
// stopped so that Syscall and Call can run on it while the rest of the
// process runs: the live patcher prepares new code this way and stops the
// whole process only for the moment it checks stacks and writes jumps.
func (p *Process) ResumeExcept(keep int) error {
	return p.do("resume", func() error {
		if _, err := p.stoppedThread("resume", keep); err != nil {
			return err
		}
		p.kept = keep
		var first error
		for _, tid := range p.stoppedTids() {
			if tid == keep {
				continue
			}
			// Threads created while the process runs must not stop at
			// birth waiting for us: stop tracing clones until Stop, which
			// finds the new threads in /proc instead.
			if err := ptrace(unix.PTRACE_SETOPTIONS, tid, 0, 0); err != nil && err != unix.ESRCH && first == nil {
				first = fmt.Errorf("ptrace setoptions tid %d: %w", tid, err)
			}
			p.untracedClones = true
			if err := p.resumeThread(p.threads[tid]); err != nil && first == nil {
				first = err
			}
		}
		return first
	})
}

// StopSome interrupts the given running threads only and waits until they
// are stopped (threads already stopped or gone are skipped). The live
// patcher stops threads that sleep in a system call early, which the
// program cannot see, and checks their stacks before stopping the rest.
func (p *Process) StopSome(tids []int) error {
	return p.do("stop", func() error {
		deadline := time.Now().Add(stopTimeout)
		for _, tid := range tids {
			t, ok := p.threads[tid]
			if !ok || t.stopped {
				continue
			}
			if !t.interrupted {
				if err := ptrace(unix.PTRACE_INTERRUPT, tid, 0, 0); err != nil && err != unix.ESRCH {
					return fmt.Errorf("ptrace interrupt tid %d: %w", tid, err)
				}
				t.interrupted = true
			}
		}
		for _, tid := range tids {
			for {
				t, ok := p.threads[tid]
				if !ok || t.stopped {
					break
				}
				ev, err := p.waitAny([]int{tid}, deadline)
				if err != nil {
					return fmt.Errorf("ptrace stop tid %d: %w", tid, err)
				}
				p.absorb(ev)
			}
		}
		return nil
	})
}

// Detach stops the process if it runs, then detaches every thread,
// delivering its held-back signals; the process continues. The Process
// cannot be used afterwards.
func (p *Process) Detach() error {
	return p.do("detach", func() error {
		err := p.detachAll()
		p.shutdown()
		return err
	})
}

// detachAll stops and detaches every thread it can. Threads that cannot
// be stopped stay attached until the tracer thread exits, when the kernel
// detaches them.
func (p *Process) detachAll() error {
	var first error
	if err := p.stopAll(time.Now().Add(stopTimeout)); err != nil && !errors.Is(err, ErrExited) {
		first = fmt.Errorf("ptrace detach pid %d: %w", p.pid, err)
	}
	for _, tid := range p.stoppedTids() {
		t := p.threads[tid]
		sig := p.takeSignals(t)
		if err := ptrace(unix.PTRACE_DETACH, tid, 0, uintptr(sig)); err != nil && err != unix.ESRCH && first == nil {
			first = fmt.Errorf("ptrace detach tid %d: %w", tid, err)
		}
		delete(p.threads, tid)
	}
	return first
}
