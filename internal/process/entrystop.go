package process

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"livesplice/internal/procfs"
)

// Stopping a new process before its program runs (for watch). The exec
// event is read after the exec, so the process may already run: it is
// seized at once and, if its entry point (AT_ENTRY) has not run yet, an
// int3 there lets it run until the dynamic loader has mapped and
// relocated every DT_NEEDED library. Then the entry is parked: its first
// two bytes become "jmp ." and the process is let go, spinning on the
// spot, so that Apply can attach as to any process. unpark puts the bytes
// back while the process is stopped; "jmp ." changes no register, so the
// registers are those at the entry. Library constructors run before the
// entry and so before the patch; a process whose constructors started
// threads is not parked (see errThreads) but patched as a running one; a
// library loaded later with dlopen is patched by a rescan.

var (
	errPastEntry = errors.New("already past its entry point")
	errReExec    = errors.New("exec'd again")
	errThreads   = errors.New("it has more than one thread at its entry point")
)

// parked is a process spinning at its entry point.
type parked struct {
	pid   int
	entry uint64
	orig  [2]byte
}

// stopAtEntry seizes pid and runs it to its entry point; there, if want
// (called while it is stopped) says so, it parks it, else lets it go on
// (and returns nil, nil). It returns errPastEntry (and lets the process go
// untouched) if the entry has run already. wait bounds how long the loader
// may take.
func stopAtEntry(pid int, wait time.Duration, want func() bool) (*parked, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := seize(pid, unix.PTRACE_O_TRACEEXEC); err != nil {
		return nil, err
	}
	detach := func() { _ = unix.PtraceDetach(pid) }
	if err := waitTrapStop(pid, time.Now().Add(wait)); err != nil {
		detach()
		return nil, err
	}
	entry, err := auxvEntry(pid)
	if err != nil {
		detach()
		return nil, err
	}
	// The entry's page is present in the page tables only once code on it
	// ran: the loader does not touch the program's text (no text
	// relocations on x86-64), and fault-around stays inside one mapping.
	if present, err := pagePresent(pid, entry); err != nil || present {
		detach()
		if err != nil {
			return nil, err
		}
		return nil, errPastEntry
	}
	mem, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_RDWR, 0)
	if err != nil {
		detach()
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	defer mem.Close()
	pk := &parked{pid: pid, entry: entry}
	if _, err := mem.ReadAt(pk.orig[:], int64(entry)); err != nil {
		detach()
		return nil, fmt.Errorf("process %d: read entry point: %w", pid, err)
	}
	if _, err := mem.WriteAt([]byte{0xcc}, int64(entry)); err != nil {
		detach()
		return nil, fmt.Errorf("process %d: breakpoint at entry point: %w", pid, err)
	}
	undo := func() {
		mem.WriteAt(pk.orig[:1], int64(entry))
		detach()
	}
	if err := unix.PtraceCont(pid, 0); err != nil {
		undo()
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	if err := runToBreakpoint(pid, entry, time.Now().Add(wait)); err != nil {
		if errors.Is(err, errReExec) || errors.Is(err, unix.ESRCH) {
			detach() // a new image, or none: the int3 went with the old one
			return nil, err
		}
		// Still on the way (a constructor blocks): stop it and take the
		// breakpoint out; it is then patched as a running process.
		if hit := interruptAtBreakpoint(pid, entry); !hit {
			undo()
			return nil, err
		}
	}
	var regs unix.PtraceRegs
	if err := unix.PtraceGetRegs(pid, &regs); err != nil {
		undo()
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	regs.Rip = entry
	if !want() {
		mem.WriteAt(pk.orig[:1], int64(entry))
		unix.PtraceSetRegs(pid, &regs)
		detach()
		return nil, nil
	}
	if tids, _ := procfs.Tasks(pid); len(tids) > 1 {
		// Library constructors started threads. Apply runs its remote
		// system calls at the entry point (ptrace's scratch code, safe
		// because _start never runs again) and may let other threads
		// run meanwhile: a thread parked there would run that code. Let
		// it go: it is patched as a running process.
		mem.WriteAt(pk.orig[:1], int64(entry))
		unix.PtraceSetRegs(pid, &regs)
		detach()
		return nil, fmt.Errorf("process %d: %w", pid, errThreads)
	}
	if _, err := mem.WriteAt([]byte{0xeb, 0xfe}, int64(entry)); err != nil { // jmp .
		undo()
		return nil, fmt.Errorf("process %d: park at entry point: %w", pid, err)
	}
	if err := unix.PtraceSetRegs(pid, &regs); err != nil {
		mem.WriteAt(pk.orig[:], int64(entry))
		detach()
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	if err := unix.PtraceDetach(pid); err != nil {
		return nil, fmt.Errorf("process %d: detach at entry point: %w", pid, err)
	}
	return pk, nil
}

// unpark stops the process again, puts the entry's bytes back and lets it
// run its program.
func (pk *parked) unpark() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := seize(pk.pid, 0); err != nil {
		return err
	}
	if err := waitTrapStop(pk.pid, time.Now().Add(10*time.Second)); err != nil {
		unix.PtraceDetach(pk.pid)
		return err
	}
	mem, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pk.pid), os.O_RDWR, 0)
	if err == nil {
		_, err = mem.WriteAt(pk.orig[:], int64(pk.entry))
		mem.Close()
	}
	if derr := unix.PtraceDetach(pk.pid); err == nil && derr != nil {
		err = derr
	}
	if err != nil {
		return fmt.Errorf("process %d: restore entry point: %w", pk.pid, err)
	}
	return nil
}

// seize attaches to pid without stopping it, then asks it to stop.
func seize(pid, opts int) error {
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SEIZE, uintptr(pid), 0, uintptr(opts), 0, 0); e != 0 {
		return fmt.Errorf("process %d: seize: %w", pid, e)
	}
	if err := unix.PtraceInterrupt(pid); err != nil {
		unix.PtraceDetach(pid)
		return fmt.Errorf("process %d: interrupt: %w", pid, err)
	}
	return nil
}

// waitPid polls for a state change of pid until deadline (polling, not
// blocking, so that a deadline holds).
func waitPid(pid int, deadline time.Time) (unix.WaitStatus, error) {
	var ws unix.WaitStatus
	// Short sleeps first: the loader reaches the entry point within a
	// few milliseconds, and the process waits for us once it has.
	pause := 20 * time.Microsecond
	for {
		got, err := unix.Wait4(pid, &ws, unix.WALL|unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return ws, fmt.Errorf("process %d: wait: %w", pid, err)
		}
		if got == pid {
			if ws.Exited() || ws.Signaled() {
				return ws, fmt.Errorf("process %d: %w", pid, unix.ESRCH)
			}
			return ws, nil
		}
		if time.Now().After(deadline) {
			return ws, fmt.Errorf("process %d: %w", pid, os.ErrDeadlineExceeded)
		}
		time.Sleep(pause)
		if pause < time.Millisecond {
			pause += pause / 4
		}
	}
}

// waitTrapStop waits for the stop PTRACE_INTERRUPT asked for, passing on
// any signal that arrives first.
func waitTrapStop(pid int, deadline time.Time) error {
	for {
		ws, err := waitPid(pid, deadline)
		if err != nil {
			return err
		}
		if !ws.Stopped() {
			continue
		}
		if int(ws)>>16 == unix.PTRACE_EVENT_STOP {
			return nil
		}
		if err := unix.PtraceCont(pid, passSignal(ws)); err != nil {
			return fmt.Errorf("process %d: %w", pid, err)
		}
	}
}

// runToBreakpoint continues pid until it traps at the int3 at addr.
func runToBreakpoint(pid int, addr uint64, deadline time.Time) error {
	for {
		ws, err := waitPid(pid, deadline)
		if err != nil {
			return err
		}
		if !ws.Stopped() {
			continue
		}
		switch event := int(ws) >> 16; {
		case event == unix.PTRACE_EVENT_EXEC:
			return fmt.Errorf("process %d: %w", pid, errReExec)
		case event == unix.PTRACE_EVENT_STOP:
			// A group-stop (SIGSTOP and friends) stays a stop; the
			// interrupt's own stop is passed.
			var err error
			if s := ws.StopSignal(); s == unix.SIGSTOP || s == unix.SIGTSTP || s == unix.SIGTTIN || s == unix.SIGTTOU {
				err = ptraceListen(pid)
			} else {
				err = unix.PtraceCont(pid, 0)
			}
			if err != nil {
				return fmt.Errorf("process %d: %w", pid, err)
			}
			continue
		case event != 0:
			if err := unix.PtraceCont(pid, 0); err != nil {
				return fmt.Errorf("process %d: %w", pid, err)
			}
			continue
		}
		if ws.StopSignal() == unix.SIGTRAP {
			var regs unix.PtraceRegs
			if err := unix.PtraceGetRegs(pid, &regs); err == nil && regs.Rip == addr+1 {
				return nil
			}
		}
		if err := unix.PtraceCont(pid, passSignal(ws)); err != nil {
			return fmt.Errorf("process %d: %w", pid, err)
		}
	}
}

// interruptAtBreakpoint stops a process that runs with an int3 at addr.
// It reports whether the process had hit the int3 meanwhile (then it is
// stopped there, its rip set back to addr); else it is stopped elsewhere,
// or could not be stopped.
func interruptAtBreakpoint(pid int, addr uint64) bool {
	if unix.PtraceInterrupt(pid) != nil {
		return false
	}
	deadline := time.Now().Add(time.Second)
	for {
		ws, err := waitPid(pid, deadline)
		if err != nil || !ws.Stopped() {
			return false
		}
		if int(ws)>>16 == unix.PTRACE_EVENT_STOP {
			return false
		}
		if ws.StopSignal() == unix.SIGTRAP && int(ws)>>16 == 0 {
			var regs unix.PtraceRegs
			if unix.PtraceGetRegs(pid, &regs) == nil && regs.Rip == addr+1 {
				return true
			}
		}
		if unix.PtraceCont(pid, passSignal(ws)) != nil {
			return false
		}
	}
}

func ptraceListen(pid int) error {
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_LISTEN, uintptr(pid), 0, 0, 0, 0); e != 0 {
		return e
	}
	return nil
}

// passSignal is the signal of a signal-delivery stop, to be delivered on.
func passSignal(ws unix.WaitStatus) int {
	if int(ws)>>16 != 0 {
		return 0
	}
	return int(ws.StopSignal())
}

// auxvEntry reads AT_ENTRY from /proc/PID/auxv.
func auxvEntry(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("%s/auxv", procfs.Dir(pid)))
	if err != nil {
		return 0, fmt.Errorf("process %d: %w", pid, err)
	}
	const atEntry = 9
	for i := 0; i+16 <= len(b); i += 16 {
		k, v := binary.LittleEndian.Uint64(b[i:]), binary.LittleEndian.Uint64(b[i+8:])
		if k == atEntry {
			return v, nil
		}
		if k == 0 {
			break
		}
	}
	return 0, fmt.Errorf("process %d: no AT_ENTRY in its auxiliary vector", pid)
}

// pagePresent reports whether the page holding addr is in pid's page
// tables (or swapped out: also once touched), from /proc/PID/pagemap.
func pagePresent(pid int, addr uint64) (bool, error) {
	f, err := os.Open(fmt.Sprintf("%s/pagemap", procfs.Dir(pid)))
	if err != nil {
		return false, fmt.Errorf("process %d: %w", pid, err)
	}
	defer f.Close()
	var e [8]byte
	if _, err := f.ReadAt(e[:], int64(addr/page*8)); err != nil {
		return false, fmt.Errorf("process %d: pagemap: %w", pid, err)
	}
	v := binary.LittleEndian.Uint64(e[:])
	return v&(1<<63) != 0 || v&(1<<62) != 0, nil
}
