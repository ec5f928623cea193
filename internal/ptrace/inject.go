package ptrace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"livesplice/internal/fault"
	"livesplice/internal/procfs"
)

const (
	// eflags bits: the SysV ABI wants DF clear at a call; TF would trap.
	eflagsTF = 0x100
	eflagsDF = 0x400
)

// ReadMem reads len(b) bytes at addr through /proc/PID/mem.
func (p *Process) ReadMem(addr uint64, b []byte) error {
	if f := p.rmem.Load(); f != nil && addr <= math.MaxInt64 {
		if n, err := f.ReadAt(b, int64(addr)); err == nil && n == len(b) {
			return nil
		}
	}
	return p.do("read memory", func() error { return p.readMem(addr, b) })
}

// Write is one write of WriteMems.
type Write struct {
	Addr uint64
	Data []byte
}

// WriteMems performs writes in order in one trip to the tracer thread and
// returns how many completed.
func (p *Process) WriteMems(ws []Write) (int, error) {
	done := 0
	err := p.do("write memory", func() error { return p.writeMemsLocked(ws, &done) })
	return done, err
}

func (p *Process) writeMemsLocked(ws []Write, done *int) error {
	for _, w := range ws {
		if err := p.writeMem(w.Addr, w.Data); err != nil {
			return err
		}
		*done++
	}
	return nil
}

// WriteMem writes b at addr through /proc/PID/mem. Unlike
// process_vm_writev this works on read-only and executable pages: the
// kernel writes with FOLL_FORCE, breaking copy-on-write as a debugger's
// breakpoint write does.
func (p *Process) WriteMem(addr uint64, b []byte) error {
	return p.do("write memory", func() error { return p.writeMem(addr, b) })
}

func (p *Process) checkRange(op string, addr uint64, n int) error {
	if _, ok := p.threads[p.memTid]; !ok || p.memFd < 0 {
		// The thread the file was opened through is gone.
		if err := p.openMem(); err != nil {
			return err
		}
	}
	if addr > math.MaxInt64 || uint64(n) > math.MaxInt64-addr {
		return fmt.Errorf("ptrace %s pid %d at %#x: address out of range", op, p.pid, addr)
	}
	return nil
}

func (p *Process) readMem(addr uint64, b []byte) error {
	if err := p.checkRange("read memory", addr, len(b)); err != nil {
		return err
	}
	fd := p.memFd
	for n := 0; n < len(b); {
		m, err := unix.Pread(fd, b[n:], int64(addr)+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err == nil && m <= 0 {
			err = unix.EIO
		}
		if err != nil {
			return fmt.Errorf("ptrace read memory pid %d at %#x (%d bytes): %w", p.pid, addr+uint64(n), len(b)-n, err)
		}
		n += m
	}
	return nil
}

func (p *Process) writeMem(addr uint64, b []byte) error {
	if err := p.checkRange("write memory", addr, len(b)); err != nil {
		return err
	}
	fd := p.memFd
	for n := 0; n < len(b); {
		m, err := unix.Pwrite(fd, b[n:], int64(addr)+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err == nil && m <= 0 {
			err = unix.EIO
		}
		if err != nil {
			return fmt.Errorf("ptrace write memory pid %d at %#x (%d bytes): %w", p.pid, addr+uint64(n), len(b)-n, err)
		}
		n += m
	}
	return nil
}

// scratch returns AT_ENTRY, the entry point of the main executable: an
// executable page whose code (_start) never runs again, where a few bytes
// of injected code can be placed while every thread is stopped.
func (p *Process) scratch() (uint64, error) {
	if p.entry != 0 {
		return p.entry, nil
	}
	// Through a live thread: a zombie leader's auxv is unreadable.
	tids := p.stoppedTids()
	if len(tids) == 0 {
		return 0, fmt.Errorf("ptrace pid %d: read auxv: %w", p.pid, ErrExited)
	}
	e, err := procfs.Entry(p.pid, tids[0])
	if err != nil {
		return 0, fmt.Errorf("ptrace pid %d: %w", p.pid, err)
	}
	p.entry = e
	return e, nil
}

// workThread picks the thread injected code runs on: the leader if it is
// attached and stopped, else the first stopped thread. Other threads may
// run (after ResumeExcept): the scratch code sits at the program's entry
// point, which no running thread ever executes again.
func (p *Process) workThread(op string) (*thread, error) {
	tids := p.stoppedTids()
	if len(tids) == 0 {
		if _, ok := p.threads[p.kept]; p.kept != 0 && !ok {
			// A thread held in a ptrace-stop vanishes only when the
			// process exits, is killed or execs: say so, rather than
			// blame the caller for the threads that still run.
			return nil, fmt.Errorf("ptrace %s pid %d: thread %d, kept stopped, is gone: %w", op, p.pid, p.kept, ErrExited)
		}
		if err := p.allStopped(op); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("ptrace %s pid %d: no stopped thread (call Stop first)", op, p.pid)
	}
	return p.threads[tids[0]], nil
}

// allStopped checks that no thread runs (then injected code may have made
// threads whose first stops must be collected).
func (p *Process) allStopped(op string) error {
	if len(p.threads) == 0 {
		return fmt.Errorf("ptrace %s pid %d: %w", op, p.pid, ErrExited)
	}
	for _, t := range p.threads {
		if !t.stopped {
			return fmt.Errorf("ptrace %s pid %d: tid %d is running (call Stop first)", op, p.pid, t.tid)
		}
	}
	return nil
}

// Syscall runs system call nr with args inside the target, on one stopped
// thread while the others stay stopped, and returns the raw rax. A result
// in [-4095, -1] is also returned as an error wrapping the unix.Errno.
func (p *Process) Syscall(nr uint64, args ...uint64) (uint64, error) {
	if len(args) > 6 {
		return 0, fmt.Errorf("ptrace syscall %d pid %d: %d arguments, at most 6", nr, p.pid, len(args))
	}
	var a [6]uint64
	copy(a[:], args)
	var rax uint64
	err := p.do("syscall", func() error {
		var err error
		rax, err = p.injectSyscall(fmt.Sprintf("syscall %d", nr), nr, a, syscallTimeout)
		return err
	})
	if err != nil {
		return rax, err
	}
	if r := int64(rax); r >= -4095 && r <= -1 {
		return rax, fmt.Errorf("ptrace syscall %d in pid %d: %w", nr, p.pid, unix.Errno(-r))
	}
	return rax, nil
}

// Call calls fn(args...) (SysV ABI, at most six integer arguments) on one
// stopped thread while the others stay stopped, and returns rax. If fn
// does not return within timeout the thread is interrupted, its registers
// restored, and the error wraps ErrTimeout; fn may then have left locks
// held or state half changed.
func (p *Process) Call(fn uint64, timeout time.Duration, args ...uint64) (uint64, error) {
	if len(args) > 6 {
		return 0, fmt.Errorf("ptrace call %#x pid %d: %d arguments, at most 6", fn, p.pid, len(args))
	}
	if timeout <= 0 {
		timeout = defaultCallTimeout
	}
	var a [6]uint64
	copy(a[:], args)
	var rax uint64
	err := p.do("call", func() error {
		var err error
		rax, err = p.injectCall(fmt.Sprintf("call %#x", fn), fn, a, timeout)
		return err
	})
	return rax, err
}

// beginInject picks the thread injected code runs on and reads what
// injection needs: whether every thread is stopped (after ResumeExcept the
// rest of the process runs and must keep running), the scratch address (at,
// or the program's entry point if 0) and the thread's registers to restore.
func (p *Process) beginInject(op string, at uint64) (*thread, bool, uint64, unix.PtraceRegs, error) {
	var saved unix.PtraceRegs
	t, err := p.workThread(op)
	if err != nil {
		return nil, false, 0, saved, err
	}
	allStopped := p.allStopped(op) == nil
	scratch, err := at, error(nil)
	if at == 0 {
		scratch, err = p.scratch()
	}
	if err == nil {
		err = p.getRegs(t.tid, &saved)
	}
	if err != nil {
		return nil, false, 0, saved, p.exitedErr(op, t.tid, err)
	}
	return t, allStopped, scratch, saved, nil
}

// finishInject collects the initial stops of threads the code may have
// created (when every thread was stopped before) and picks the error.
func (p *Process) finishInject(op string, allStopped bool, runErr, restoreErr error, rax uint64) (uint64, error) {
	var settleErr error
	if allStopped {
		settleErr = p.stopAll(time.Now().Add(stopTimeout))
	}
	switch {
	case runErr != nil:
		return 0, runErr
	case restoreErr != nil:
		return 0, restoreErr
	case settleErr != nil && !errors.Is(settleErr, ErrExited):
		return rax, fmt.Errorf("ptrace %s pid %d: %w", op, p.pid, settleErr)
	}
	return rax, nil
}

// Restart codes a system call interrupted by our stop may hold in rax.
const (
	erestartsys          = -512
	erestartnointr       = -513
	erestartnohand       = -514
	erestartRestartblock = -516
	sysRestartSyscall    = 219
)

// injectSyscall runs one system call on the work thread (see injectSafe).
func (p *Process) injectSyscall(op string, nr uint64, a [6]uint64, timeout time.Duration) (uint64, error) {
	return p.injectSafe(op, 0, 0, nil, []byte{0x0f, 0x05}, nr, timeout, // syscall
		func(r *unix.PtraceRegs, scratch, _ uint64) error {
			r.Rip = scratch
			r.Rax = nr
			r.Orig_rax = math.MaxUint64
			r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
			r.Eflags &^= eflagsTF
			return nil
		},
		func(r *unix.PtraceRegs) (uint64, error) { return r.Rax, nil })
}

// injectCall calls fn(args) on the work thread (see injectSafe): fn
// returns into "push %rax; mov $SYS_getpid,%eax; syscall", where the result
// is read off the stack at the system call's stop.
func (p *Process) injectCall(op string, fn uint64, a [6]uint64, timeout time.Duration) (uint64, error) {
	const getpid = 39
	prologue := []byte{0x50, 0xb8, getpid, 0, 0, 0, 0x0f, 0x05} // push %rax; mov $39,%eax; syscall
	return p.injectSafe(op, 0, 0, nil, prologue, getpid, timeout,
		func(r *unix.PtraceRegs, scratch, area uint64) error {
			// Below the save area, 16-byte aligned at the call, then the
			// return address as a call pushes it.
			sp := ((area - 64) &^ 15) - 8
			var ret [8]byte
			binary.LittleEndian.PutUint64(ret[:], scratch)
			if err := p.writeMem(sp, ret[:]); err != nil {
				return err
			}
			r.Rsp = sp
			r.Rip = fn
			r.Rax = 0 // al: vector registers used, for a variadic callee
			r.Orig_rax = math.MaxUint64
			r.Rdi, r.Rsi, r.Rdx, r.Rcx, r.R8, r.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
			r.Eflags &^= eflagsTF | eflagsDF
			return nil
		},
		func(r *unix.PtraceRegs) (uint64, error) {
			var b [8]byte
			if err := p.readMem(r.Rsp, b[:]); err != nil {
				return 0, err
			}
			return binary.LittleEndian.Uint64(b[:]), nil
		})
}

// injectSafe runs injected code on the work thread without ever leaving a
// trap behind. The code at the scratch address is prologue, which ends
// with a system call (number nr), followed by an epilogue that restores
// the thread's registers from a save area just below its red zone and
// returns to where it was (restarting a system call our stop had
// interrupted, as the kernel would have). While livesplice lives, it
// catches the thread at that system call's exit (PTRACE_SYSCALL with
// TRACESYSGOOD) and puts the registers back itself, so the epilogue never
// runs; if livesplice is killed meanwhile, the kernel lets the thread go,
// it runs the epilogue, and the program goes on unharmed.
//
// The code goes at the program's entry point, or at at if not 0; extra
// more bytes of stack below the save area are kept and put back too. With
// done not nil the code is a chain (Syscalls): it runs without system call
// stops and writes 1 at *done (set by setup) when it waits at its end
// (runToDone).
func (p *Process) injectSafe(op string, at uint64, extra int, done *uint64, prologue []byte, nr uint64, timeout time.Duration,
	setup func(r *unix.PtraceRegs, scratch, area uint64) error,
	result func(r *unix.PtraceRegs) (uint64, error)) (uint64, error) {
	t, allStopped, scratch, saved, err := p.beginInject(op, at)
	if err != nil {
		return 0, err
	}
	fail := func(err error) (uint64, error) { return 0, p.exitedErr(op, t.tid, err) }
	resumeRip, resumeRax := saved.Rip, saved.Rax
	if int64(saved.Orig_rax) >= 0 {
		switch int64(saved.Rax) {
		case erestartsys, erestartnointr, erestartnohand:
			resumeRip, resumeRax = saved.Rip-2, saved.Orig_rax
		case erestartRestartblock:
			resumeRip, resumeRax = saved.Rip-2, sysRestartSyscall
		}
	}
	// rip sits at save+80 = rsp-136, just below the red zone: "ret $0x80"
	// pops it and leaves rsp exactly where it was.
	area := saved.Rsp - 216
	save := make([]byte, 88)
	for i, v := range []uint64{resumeRax, saved.Rcx, saved.Rdx, saved.Rsi, saved.Rdi, saved.R8, saved.R9,
		saved.R10, saved.R11, saved.Eflags, resumeRip} {
		binary.LittleEndian.PutUint64(save[8*i:], v)
	}
	epilogue := []byte{0x48, 0xbc, 0, 0, 0, 0, 0, 0, 0, 0, // movabs $area, %rsp
		0x58, 0x59, 0x5a, 0x5e, 0x5f, // pop rax, rcx, rdx, rsi, rdi
		0x41, 0x58, 0x41, 0x59, 0x41, 0x5a, 0x41, 0x5b, // pop r8, r9, r10, r11
		0x9d,             // popfq
		0xc2, 0x80, 0x00, // ret $0x80
	}
	binary.LittleEndian.PutUint64(epilogue[2:], area)
	code := append(append([]byte{}, prologue...), epilogue...)
	catch := scratch + uint64(len(prologue)) // rip at the system call's stops
	// Below the save area: the stack a called function may use.
	low := area - 256 - uint64(extra)
	origCode := make([]byte, len(code))
	origStack := make([]byte, area+uint64(len(save))-low)
	if err := p.readMem(scratch, origCode); err != nil {
		return fail(err)
	}
	if err := p.readMem(low, origStack); err != nil {
		return fail(fmt.Errorf("ptrace %s tid %d: stack below %#x: %w", op, t.tid, saved.Rsp, err))
	}
	restoreMem := func() {
		p.writeMem(scratch, origCode)
		p.writeMem(low, origStack)
	}
	if err := p.writeMem(area, save); err != nil {
		return fail(err)
	}
	if err := p.writeMem(scratch, code); err != nil {
		restoreMem()
		return fail(err)
	}
	regs := saved
	err = setup(&regs, scratch, area)
	if err == nil {
		err = p.setRegs(t.tid, &regs)
	}
	opts := unix.PTRACE_O_TRACECLONE
	if p.untracedClones {
		opts = 0
	}
	if err == nil {
		err = ptrace(unix.PTRACE_SETOPTIONS, t.tid, 0, uintptr(opts|unix.PTRACE_O_TRACESYSGOOD))
	}
	if err != nil {
		p.setRegs(t.tid, &saved)
		restoreMem()
		return fail(fmt.Errorf("ptrace %s tid %d: %w", op, t.tid, err))
	}
	// A livesplice killed here leaves the thread to run the code and the
	// epilogue on its own (tested through these fault points: one system
	// call, or a chain of them).
	if at == 0 {
		fault.Point("ptrace:syscall")
	} else {
		fault.Point("ptrace:syscalls")
	}
	var rax uint64
	var runErr error
	escaped := false
	if done != nil {
		// A chain (Syscalls) runs without system call stops and waits at
		// its end; see runToDone.
		escaped, runErr = p.runToDone(op, t, *done, time.Now().Add(timeout), scratch, scratch+uint64(len(code)))
		if escaped && runErr == nil {
			// Its results lay below its stack: the program may have
			// used that memory since.
			runErr = fmt.Errorf("ptrace %s tid %d: the thread went back to the program before livesplice took it back (%w past %v): %w", op, t.tid, ErrStalled, chainWait, ErrTimeout)
		}
		if runErr == nil {
			var r unix.PtraceRegs
			if runErr = p.getRegs(t.tid, &r); runErr == nil {
				rax, runErr = result(&r)
			}
		}
		// A thread that ran its epilogue is where it was before: with
		// its registers of then, running the program's code.
		if escaped {
			// Its stack below where it was is the program's again: only
			// the code goes back.
			ptrace(unix.PTRACE_SETOPTIONS, t.tid, 0, uintptr(opts))
			p.writeMem(scratch, origCode)
			return p.finishInject(op, allStopped, runErr, nil, rax)
		}
	} else {
		runErr = p.runSyscallCatch(op, t, catch, nr, timeout, result, &rax)
	}
	var restoreErr error
	if _, alive := p.threads[t.tid]; alive {
		ptrace(unix.PTRACE_SETOPTIONS, t.tid, 0, uintptr(opts))
		restoreErr = p.setRegs(t.tid, &saved)
		if restoreErr == nil && runErr == nil {
			// The thread sits in a syscall-exit stop (or, for a chain, an
			// interrupt stop), from which the kernel neither restarts the
			// system call our stop had interrupted nor lets held signals
			// keep their siginfo. Interrupt and continue it: it stops
			// again on its way to user space, after the kernel's restart
			// handling has run on the registers just restored, without
			// running any code.
			restoreErr = p.reStop(t, time.Now().Add(stopTimeout))
		}
	}
	restoreMem()
	return p.finishInject(op, allStopped, runErr, restoreErr, rax)
}

// runSyscallCatch runs injected code ending in system call nr at catch
// until that call's exit stop, where result reads the outcome.
func (p *Process) runSyscallCatch(op string, t *thread, catch, nr uint64, timeout time.Duration,
	result func(r *unix.PtraceRegs) (uint64, error), rax *uint64) error {
	// Two syscall stops at catch: the entry, then the exit.
	stops := 0
	return p.runUntil(op, t, time.Now().Add(timeout), unix.PTRACE_SYSCALL,
		func(r *unix.PtraceRegs) bool { return r.Rip == catch && r.Orig_rax == nr },
		func(r *unix.PtraceRegs, _ bool) (bool, error) {
			stops++
			if stops < 2 {
				return false, nil
			}
			v, err := result(r)
			*rax = v
			return true, err
		})
}

// reStop moves a stopped thread into a fresh interrupt stop.
func (p *Process) reStop(t *thread, deadline time.Time) error {
	if err := ptrace(unix.PTRACE_INTERRUPT, t.tid, 0, 0); err != nil {
		return fmt.Errorf("ptrace interrupt tid %d: %w", t.tid, err)
	}
	t.interrupted = true
	if err := p.cont(t, unix.PTRACE_CONT); err != nil {
		return err
	}
	for !t.stopped {
		ev, err := p.waitAny([]int{t.tid}, deadline)
		if err != nil {
			return fmt.Errorf("tid %d did not stop: %w", t.tid, err)
		}
		p.absorb(ev)
		if _, ok := p.threads[t.tid]; !ok {
			return fmt.Errorf("tid %d: %w", t.tid, ErrExited)
		}
	}
	return nil
}

// runUntil continues t alone (with req: PTRACE_SYSCALL) until onTrap
// reports it done. isOurs tells whether registers at a syscall stop are at
// our injected system call; onTrap then handles that stop (its second
// argument says the deadline passed, in which case it must not plan to
// continue). Other signals are held back for the program; clone and event
// stops are continued. A fault in injected code ends the run with an error
// (it never happened once the registers are restored). At the deadline the
// thread is interrupted and the error wraps ErrTimeout; if the thread
// exits it wraps ErrExited. t is stopped on return unless gone.
func (p *Process) runUntil(op string, t *thread, deadline time.Time, req int,
	isOurs func(r *unix.PtraceRegs) bool,
	onTrap func(r *unix.PtraceRegs, timedOut bool) (bool, error)) error {
	tid := t.tid
	fail := func(err error) error {
		if errors.Is(err, ErrExited) {
			return fmt.Errorf("ptrace %s tid %d: %w", op, tid, err)
		}
		return p.exitedErr(op, tid, fmt.Errorf("ptrace %s tid %d: %w", op, tid, err))
	}
	if err := p.cont(t, req); err != nil {
		return fail(err)
	}
	timedOut := false
	for {
		ev, err := p.waitAny([]int{tid}, deadline)
		if errors.Is(err, errWaitTimeout) && !timedOut {
			timedOut = true
			deadline = time.Now().Add(stopTimeout)
			if err := ptrace(unix.PTRACE_INTERRUPT, tid, 0, 0); err != nil && err != unix.ESRCH {
				return fail(fmt.Errorf("interrupt: %w", err))
			}
			t.interrupted = true
			continue
		}
		if err != nil {
			return fail(err)
		}
		kind, sig := p.note(ev)
		if kind == kindExit {
			return fail(ErrExited)
		}
		if kind == kindNone {
			continue
		}
		var r unix.PtraceRegs
		if err := p.getRegs(tid, &r); err != nil {
			return fail(err)
		}
		switch {
		case kind == kindSyscall:
			// Ours ends the run; the called function's own system calls
			// just go on.
			if isOurs(&r) {
				done, err := onTrap(&r, timedOut)
				if err != nil {
					return fail(err)
				}
				if done {
					return nil
				}
			}
		case kind == kindSignal && isFault(tid, sig):
			// Ignoring a fault would re-execute the faulting instruction
			// for ever; injected code's faults never happened once its
			// registers are restored.
			return fail(faultError(tid, sig, r.Rip))
		case kind == kindSignal:
			p.recordSignal(t, sig)
		}
		if timedOut {
			return fail(ErrTimeout)
		}
		if err := p.cont(t, req); err != nil {
			return fail(err)
		}
	}
}

// faultError describes the fault sig of thread tid at pc, with the
// faulting address from its siginfo.
func faultError(tid, sig int, pc uint64) *FaultError {
	fe := &FaultError{Signal: unix.Signal(sig), PC: pc}
	if si, err := getSiginfo(tid); err == nil {
		fe.Addr = *(*uint64)(unsafe.Add(unsafe.Pointer(&si), 16)) // si_addr
	}
	return fe
}

// FaultError is a fault (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP) of code
// called in the target; its registers were restored, so for the program
// it never happened.
type FaultError struct {
	Signal unix.Signal
	Addr   uint64 // si_addr: the faulting address (or instruction)
	PC     uint64
}

func (e *FaultError) Error() string {
	return fmt.Sprintf("%s (fault address %#x) at pc %#x", unix.SignalName(e.Signal), e.Addr, e.PC)
}

// chainStall, set only by tests, makes runToDone wait that long between
// seeing a chain done and taking the thread back: a livesplice descheduled
// for longer than the thread waits for it (chainWait).
var chainStall time.Duration

// runToDone runs a chain (Syscalls) on t with PTRACE_CONT, so that its
// system calls cost no stops, until it writes 1 at done, then interrupts it
// where it waits at its end: in a ppoll with a time limit, which a
// livesplice killed meanwhile leaves it to time out of and run its
// epilogue. Signals meanwhile are held back; a fault ends the run. It
// reports escaped if the thread was stopped outside [lo, hi) (had it
// waited past the time limit, it ran the epilogue and went back to the
// program: its registers must stay as they are). t is stopped on return
// unless gone.
func (p *Process) runToDone(op string, t *thread, done uint64, deadline time.Time, lo, hi uint64) (bool, error) {
	tid := t.tid
	fail := func(err error) (bool, error) {
		if errors.Is(err, ErrExited) {
			return false, fmt.Errorf("ptrace %s tid %d: %w", op, tid, err)
		}
		return false, p.exitedErr(op, tid, fmt.Errorf("ptrace %s tid %d: %w", op, tid, err))
	}
	if err := p.cont(t, unix.PTRACE_CONT); err != nil {
		return fail(err)
	}
	sleep := 20 * time.Microsecond
	var b [8]byte
	timedOut := false
	for !t.stopped {
		if p.readMem(done, b[:]) == nil && binary.LittleEndian.Uint64(b[:]) == 1 {
			break
		}
		var ws unix.WaitStatus
		got, err := unix.Wait4(tid, &ws, unix.WNOHANG|unix.WALL, nil)
		if err == unix.ECHILD {
			p.note(event{tid: tid, gone: true})
			return fail(ErrExited)
		}
		if got == tid {
			kind, sig := p.note(event{tid: tid, ws: ws})
			switch {
			case kind == kindExit:
				return fail(ErrExited)
			case kind == kindSignal && isFault(tid, sig):
				var r unix.PtraceRegs
				p.getRegs(tid, &r)
				return fail(faultError(tid, sig, r.Rip))
			case kind == kindSignal:
				p.recordSignal(t, sig)
			}
			if err := p.cont(t, unix.PTRACE_CONT); err != nil {
				return fail(err)
			}
			continue
		}
		if time.Now().After(deadline) {
			timedOut = true
			break
		}
		time.Sleep(sleep)
		sleep = min(sleep*2, time.Millisecond)
	}
	if chainStall > 0 && !timedOut {
		time.Sleep(chainStall)
	}
	if !t.stopped {
		if err := ptrace(unix.PTRACE_INTERRUPT, tid, 0, 0); err != nil && err != unix.ESRCH {
			return fail(fmt.Errorf("interrupt: %w", err))
		}
		t.interrupted = true
		for !t.stopped {
			ev, err := p.waitAny([]int{tid}, time.Now().Add(stopTimeout))
			if err != nil {
				return fail(err)
			}
			switch kind, sig := p.note(ev); kind {
			case kindExit:
				return fail(ErrExited)
			case kindSignal:
				p.recordSignal(t, sig)
			}
		}
	}
	var r unix.PtraceRegs
	if err := p.getRegs(tid, &r); err != nil {
		return fail(err)
	}
	escaped := r.Rip < lo || r.Rip >= hi
	if timedOut {
		return escaped, fmt.Errorf("ptrace %s tid %d: %w", op, tid, ErrTimeout)
	}
	return escaped, nil
}
