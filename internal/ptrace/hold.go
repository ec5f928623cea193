package ptrace

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// RunToStubs lets the stopped process run until every thread in watch has
// reached its stub: a system call nr whose instruction ends at watch[tid]
// (the live patcher's return stubs, amd64.ReturnStub). Each watched thread
// runs under PTRACE_SYSCALL and is stopped there, before its call runs,
// then moved into an ordinary interrupt stop (so that system calls can be
// injected on it and detaching lets it finish the stub); threads in hold
// stay stopped; every other thread runs freely. Signals for watched
// threads are delivered at once (the program may need one to leave the
// function), except stop signals, held back as everywhere else.
//
// It returns the watched threads that reached their stub (gone threads
// are left out) when all have, or at the deadline; every watched thread
// is stopped on return, the rest run. A tracer killed meanwhile leaves
// nothing behind: the kernel detaches the threads, and a thread at its
// stub's system call makes it and goes on.
func (p *Process) RunToStubs(watch map[int]uint64, nr uint64, hold map[int]bool, deadline time.Time) (map[int]bool, error) {
	var reached map[int]bool
	err := p.do("run to stubs", func() (err error) {
		reached, err = p.runToStubs(watch, nr, hold, deadline)
		return err
	})
	return reached, err
}

func (p *Process) runToStubs(watch map[int]uint64, nr uint64, hold map[int]bool, deadline time.Time) (map[int]bool, error) {
	reached := map[int]bool{}
	opts := unix.PTRACE_O_TRACECLONE
	if p.untracedClones {
		opts = 0
	}
	var running []int
	p.kept = 0
	for _, tid := range p.stoppedTids() {
		t := p.threads[tid]
		if _, ok := watch[tid]; !ok || t.groupStopped {
			if hold[tid] {
				continue
			}
			if err := p.resumeThread(t); err != nil {
				return nil, err
			}
			continue
		}
		if err := ptrace(unix.PTRACE_SETOPTIONS, tid, 0, uintptr(opts|unix.PTRACE_O_TRACESYSGOOD)); err != nil {
			if err == unix.ESRCH {
				continue
			}
			return nil, fmt.Errorf("ptrace setoptions tid %d: %w", tid, err)
		}
		// Signals held back while the world was stopped go with it.
		sig := p.takeSignals(t)
		if err := ptrace(unix.PTRACE_SYSCALL, tid, 0, uintptr(sig)); err != nil && err != unix.ESRCH {
			return nil, fmt.Errorf("ptrace syscall tid %d: %w", tid, err)
		}
		t.stopped = false
		running = append(running, tid)
	}
	// park moves a thread from a system call stop into an interrupt stop
	// and gives it its options back.
	park := func(t *thread) error {
		if err := p.reStop(t, time.Now().Add(stopTimeout)); err != nil {
			return err
		}
		ptrace(unix.PTRACE_SETOPTIONS, t.tid, 0, uintptr(opts))
		return nil
	}
	timedOut := false
	for len(running) > 0 {
		ev, err := p.waitAny(running, deadline)
		if errors.Is(err, errWaitTimeout) && !timedOut {
			// Stop the ones still on their way, then finish as usual.
			timedOut = true
			deadline = time.Now().Add(stopTimeout)
			for _, tid := range running {
				if ptrace(unix.PTRACE_INTERRUPT, tid, 0, 0) == nil {
					p.threads[tid].interrupted = true
				}
			}
			continue
		}
		if err != nil {
			return reached, err
		}
		t := p.threads[ev.tid]
		kind, sig := p.note(ev)
		drop := func() {
			for i, tid := range running {
				if tid == ev.tid {
					running = append(running[:i], running[i+1:]...)
					return
				}
			}
		}
		if kind == kindExit {
			drop()
			continue
		}
		if kind == kindNone || t == nil {
			continue
		}
		req, csig := unix.PTRACE_SYSCALL, 0
		switch kind {
		case kindSyscall:
			var r unix.PtraceRegs
			if err := p.getRegs(t.tid, &r); err != nil {
				return reached, p.exitedErr("run to stubs", t.tid, err)
			}
			if r.Rip == watch[t.tid] && r.Orig_rax == nr {
				drop()
				if err := park(t); err != nil {
					if errors.Is(err, ErrExited) {
						continue
					}
					return reached, err
				}
				reached[t.tid] = true
				continue
			}
		case kindSignal:
			if isStopSignal(sig) || timedOut {
				p.recordSignal(t, sig)
			} else {
				csig = sig
			}
		case kindEvent:
			if t.groupStopped {
				// The process is stopped by a signal: it stays so, and
				// this thread will not reach its stub before the
				// deadline.
				drop()
				ptrace(unix.PTRACE_SETOPTIONS, t.tid, 0, uintptr(opts))
				continue
			}
		}
		if timedOut {
			// Interrupted (or stopped on the way): keep it stopped, in
			// an interrupt stop if it stopped at a system call.
			drop()
			if kind == kindSyscall {
				if err := park(t); err != nil && !errors.Is(err, ErrExited) {
					return reached, err
				}
			} else {
				ptrace(unix.PTRACE_SETOPTIONS, t.tid, 0, uintptr(opts))
			}
			continue
		}
		if err := ptrace(req, t.tid, 0, uintptr(csig)); err != nil {
			if err == unix.ESRCH {
				t.stopped = false
				continue
			}
			return reached, fmt.Errorf("ptrace syscall tid %d: %w", t.tid, err)
		}
		t.stopped = false
	}
	if timedOut {
		return reached, fmt.Errorf("run to stubs: %w", ErrTimeout)
	}
	return reached, nil
}
