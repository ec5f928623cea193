package ptrace

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Seized is a single-threaded process seized without the whole-process
// machinery of Process: watch uses it to stop a process that has just
// exec'd before its program runs (internal/process entrystop.go). Every
// method must be called from the OS thread that called Seize (the caller
// locks it).
type Seized struct{ pid int }

// ErrReExec: the seized process exec'd again (with TraceExec).
var ErrReExec = errors.New("exec'd again")

// Seize attaches to pid without stopping it (PTRACE_SEIZE, with
// PTRACE_O_TRACEEXEC when traceExec), then asks it to stop
// (PTRACE_INTERRUPT); WaitInterrupted waits for that stop.
func Seize(pid int, traceExec bool) (*Seized, error) {
	opts := 0
	if traceExec {
		opts = unix.PTRACE_O_TRACEEXEC
	}
	if err := ptrace(unix.PTRACE_SEIZE, pid, 0, uintptr(opts)); err != nil {
		return nil, fmt.Errorf("process %d: seize: %w", pid, err)
	}
	if err := unix.PtraceInterrupt(pid); err != nil {
		unix.PtraceDetach(pid)
		return nil, fmt.Errorf("process %d: interrupt: %w", pid, err)
	}
	return &Seized{pid}, nil
}

// Detach lets the process go.
func (s *Seized) Detach() error { return unix.PtraceDetach(s.pid) }

// Cont resumes the process.
func (s *Seized) Cont() error {
	if err := unix.PtraceCont(s.pid, 0); err != nil {
		return fmt.Errorf("process %d: %w", s.pid, err)
	}
	return nil
}

// Regs reads the stopped thread's registers.
func (s *Seized) Regs() (unix.PtraceRegs, error) {
	var regs unix.PtraceRegs
	if err := unix.PtraceGetRegs(s.pid, &regs); err != nil {
		return regs, fmt.Errorf("process %d: %w", s.pid, err)
	}
	return regs, nil
}

// SetRegs writes the stopped thread's registers.
func (s *Seized) SetRegs(regs *unix.PtraceRegs) error {
	if err := unix.PtraceSetRegs(s.pid, regs); err != nil {
		return fmt.Errorf("process %d: %w", s.pid, err)
	}
	return nil
}

// wait polls for a state change until deadline (poll: the loader
// reaches the entry point within a few milliseconds, and the process
// waits for us once it has).
func (s *Seized) wait(deadline time.Time) (unix.WaitStatus, error) {
	var ws unix.WaitStatus
	err := poll(deadline, func() (bool, error) {
		got, err := unix.Wait4(s.pid, &ws, unix.WALL|unix.WNOHANG, nil)
		switch {
		case err == unix.EINTR:
			return false, nil
		case err != nil:
			return false, fmt.Errorf("process %d: wait: %w", s.pid, err)
		case got != s.pid:
			return false, nil
		case ws.Exited() || ws.Signaled():
			return false, fmt.Errorf("process %d: %w", s.pid, unix.ESRCH)
		}
		return true, nil
	})
	if errors.Is(err, errWaitTimeout) {
		return ws, fmt.Errorf("process %d: %w", s.pid, os.ErrDeadlineExceeded)
	}
	return ws, err
}

// WaitInterrupted waits for the stop PTRACE_INTERRUPT asked for, passing
// on any signal that arrives first.
func (s *Seized) WaitInterrupted(deadline time.Time) error {
	for {
		ws, err := s.wait(deadline)
		if err != nil {
			return err
		}
		if !ws.Stopped() {
			continue
		}
		if int(ws)>>16 == unix.PTRACE_EVENT_STOP {
			return nil
		}
		if err := unix.PtraceCont(s.pid, passSignal(ws)); err != nil {
			return fmt.Errorf("process %d: %w", s.pid, err)
		}
	}
}

// RunToBreakpoint continues the process until it traps at the int3 the
// caller wrote at addr (then it is stopped with rip at addr+1). Signals
// are passed on, group-stops kept; ErrReExec if it exec'd meanwhile.
func (s *Seized) RunToBreakpoint(addr uint64, deadline time.Time) error {
	for {
		ws, err := s.wait(deadline)
		if err != nil {
			return err
		}
		if !ws.Stopped() {
			continue
		}
		switch event := int(ws) >> 16; {
		case event == unix.PTRACE_EVENT_EXEC:
			return fmt.Errorf("process %d: %w", s.pid, ErrReExec)
		case event == unix.PTRACE_EVENT_STOP:
			// A group-stop (SIGSTOP and friends) stays a stop; the
			// interrupt's own stop is passed.
			var err error
			if isStopSignal(int(ws.StopSignal())) {
				err = ptrace(unix.PTRACE_LISTEN, s.pid, 0, 0)
			} else {
				err = unix.PtraceCont(s.pid, 0)
			}
			if err != nil {
				return fmt.Errorf("process %d: %w", s.pid, err)
			}
			continue
		case event != 0:
			if err := unix.PtraceCont(s.pid, 0); err != nil {
				return fmt.Errorf("process %d: %w", s.pid, err)
			}
			continue
		}
		if s.atBreakpoint(ws, addr) {
			return nil
		}
		if err := unix.PtraceCont(s.pid, passSignal(ws)); err != nil {
			return fmt.Errorf("process %d: %w", s.pid, err)
		}
	}
}

// InterruptAtBreakpoint stops a process that runs with an int3 at addr.
// It reports whether the process had hit the int3 meanwhile (then it is
// stopped there, rip at addr+1); else it is stopped elsewhere, or could
// not be stopped.
func (s *Seized) InterruptAtBreakpoint(addr uint64) bool {
	if unix.PtraceInterrupt(s.pid) != nil {
		return false
	}
	deadline := time.Now().Add(time.Second)
	for {
		ws, err := s.wait(deadline)
		if err != nil || !ws.Stopped() {
			return false
		}
		if int(ws)>>16 == unix.PTRACE_EVENT_STOP {
			return false
		}
		if int(ws)>>16 == 0 && s.atBreakpoint(ws, addr) {
			return true
		}
		if unix.PtraceCont(s.pid, passSignal(ws)) != nil {
			return false
		}
	}
}

func (s *Seized) atBreakpoint(ws unix.WaitStatus, addr uint64) bool {
	if ws.StopSignal() != unix.SIGTRAP {
		return false
	}
	var regs unix.PtraceRegs
	return unix.PtraceGetRegs(s.pid, &regs) == nil && regs.Rip == addr+1
}

// passSignal is the signal of a signal-delivery stop, to be delivered on.
func passSignal(ws unix.WaitStatus) int {
	if int(ws)>>16 != 0 {
		return 0
	}
	return int(ws.StopSignal())
}
