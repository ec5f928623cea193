package process

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"livesplice/internal/procfs"
	"livesplice/internal/ptrace"
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
	sz, err := ptrace.Seize(pid, true)
	if err != nil {
		return nil, err
	}
	detach := func() { _ = sz.Detach() }
	if err := sz.WaitInterrupted(time.Now().Add(wait)); err != nil {
		detach()
		return nil, err
	}
	entry, err := procfs.Entry(pid, 0)
	if err != nil {
		detach()
		return nil, err
	}
	// The entry's page is present in the page tables only once code on it
	// ran: the loader does not touch the program's text (no text
	// relocations on x86-64), and fault-around stays inside one mapping.
	if present, err := procfs.PagePresent(pid, entry); err != nil || present {
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
	if err := sz.Cont(); err != nil {
		undo()
		return nil, err
	}
	if err := sz.RunToBreakpoint(entry, time.Now().Add(wait)); err != nil {
		if errors.Is(err, ptrace.ErrReExec) || errors.Is(err, unix.ESRCH) {
			detach() // a new image, or none: the int3 went with the old one
			return nil, err
		}
		// Still on the way (a constructor blocks): stop it and take the
		// breakpoint out; it is then patched as a running process.
		if hit := sz.InterruptAtBreakpoint(entry); !hit {
			undo()
			return nil, err
		}
	}
	regs, err := sz.Regs()
	if err != nil {
		undo()
		return nil, err
	}
	regs.Rip = entry
	// letGo puts the entry's bytes back, the thread at the entry, and
	// lets the process run its program.
	letGo := func() {
		mem.WriteAt(pk.orig[:], int64(entry))
		sz.SetRegs(&regs)
		detach()
	}
	if !want() {
		letGo()
		return nil, nil
	}
	if tids, _ := procfs.Tasks(pid); len(tids) > 1 {
		// Library constructors started threads. Apply runs its remote
		// system calls at the entry point (ptrace's scratch code, safe
		// because _start never runs again) and may let other threads
		// run meanwhile: a thread parked there would run that code. Let
		// it go: it is patched as a running process.
		letGo()
		return nil, fmt.Errorf("process %d: %w", pid, errThreads)
	}
	if _, err := mem.WriteAt([]byte{0xeb, 0xfe}, int64(entry)); err != nil { // jmp .
		undo()
		return nil, fmt.Errorf("process %d: park at entry point: %w", pid, err)
	}
	if err := sz.SetRegs(&regs); err != nil {
		letGo()
		return nil, err
	}
	if err := sz.Detach(); err != nil {
		return nil, fmt.Errorf("process %d: detach at entry point: %w", pid, err)
	}
	return pk, nil
}

// unpark stops the process again, puts the entry's bytes back and lets it
// run its program.
func (pk *parked) unpark() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	sz, err := ptrace.Seize(pk.pid, false)
	if err != nil {
		return err
	}
	if err := sz.WaitInterrupted(time.Now().Add(10 * time.Second)); err != nil {
		sz.Detach()
		return err
	}
	mem, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pk.pid), os.O_RDWR, 0)
	if err == nil {
		_, err = mem.WriteAt(pk.orig[:], int64(pk.entry))
		mem.Close()
	}
	if derr := sz.Detach(); err == nil && derr != nil {
		err = derr
	}
	if err != nil {
		return fmt.Errorf("process %d: restore entry point: %w", pk.pid, err)
	}
	return nil
}
