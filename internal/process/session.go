// Package process is the live patcher's backend for running processes: it
// attaches to every thread with ptrace, proves by run-pre matching that the
// running code is what an update was built for, places the new code near
// the old, waits until no thread is inside a function being replaced, then
// writes the trampolines — or changes nothing at all.
package process

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"livesplice/internal/fault"
	"livesplice/internal/procfs"
	"livesplice/internal/ptrace"
	"livesplice/internal/state"
	"livesplice/internal/target"
)

// Options tune apply and undo: the options every target takes, and what a
// fleet run hands its sessions.
type Options struct {
	// Deadline bounds the wait for threads to leave the functions being
	// replaced (default 10 s); HookTimeout each call of an update's hook in
	// the target (default 5 s; a hook that runs longer is interrupted and
	// the operation abandoned); Log receives progress lines (nil: quiet).
	target.Options

	// ids: a fleet scan's build-ids by device and inode (ApplyAll).
	ids *scanIDs
}

// The process's words for the refusals of internal/target, which callers
// and tests match with errors.Is (either name).
var (
	ErrBusy           = target.Mark(target.ErrBusy, "function busy")
	ErrAlreadyApplied = target.ErrApplied
	ErrNotApplied     = target.ErrNotApplied
	ErrDependent      = target.ErrDependent
	ErrNotMapped      = target.Mark(target.ErrMismatch, "not mapped")
	// ErrNotPermitted: the process's /proc files may not be read by us
	// (another user's process); ptrace's own refusal is unix.EPERM.
	ErrNotPermitted = target.Mark(target.ErrPermission, "not permitted")
)

func (o Options) deadline() time.Duration {
	if o.Deadline <= 0 {
		return 10 * time.Second
	}
	return o.Deadline
}

func (o Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", args...)
	}
}

// session is one attachment to a process: every thread stopped.
type session struct {
	pid       int
	p         *ptrace.Process
	maps      []procfs.Mapping
	mods      []*module
	rec       *state.Record
	stateAddr uint64
	opt       Options
	worker    int // the thread kept stopped for system calls
	slot      int // the state record's body slot the header points at
	cache     *pageCache
	clean     map[int]bool            // threads checked while stopped since (precheck)
	regs      map[int]unix.PtraceRegs // read by stopWorld, for the next check
	lock      *targetLock             // per-process lock (lockTarget), held until detach
	frames    []placedFrames          // applied updates' call frame information (readFrames)
	stubs     stubRegion              // the return stub region, once found or made (retstub.go)
	stubEH    []byte                  // its .eh_frame, encoded once (stubFrames)
	views     map[int]busy            // every thread as the last checks saw it
}

// attach seizes every thread of pid but stops only one, kept for remote
// system calls: the slow preparation (matching, placing and relocating the
// new code) costs the program no pause; stopWorld stops it all for the
// safety check and the splice.
func attach(pid int, opt Options) (*session, error) {
	lock, err := lockTarget(pid, opt.deadline())
	if err != nil {
		return nil, err
	}
	// The caller runs on its own locked thread (ptrace.Here in Apply and
	// Undo): every ptrace request of the session is then a plain call.
	p, err := ptrace.AttachOneHere(pid)
	if err != nil {
		lock.Close()
		return nil, err
	}
	s := &session{pid: pid, p: p, opt: opt, worker: p.Threads()[0], lock: lock}
	if err := s.refresh(); err != nil {
		s.detach()
		return nil, err
	}
	s.rec, s.stateAddr, s.slot, err = readState(p, s.maps)
	if err != nil {
		s.detach()
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	if err := s.recoverInterrupted(); err != nil {
		s.detach()
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	return s, nil
}

// exited makes a failure of a process that has exited, or is exiting,
// say so (wrapping ptrace.ErrExited): whichever step noticed first would
// otherwise blame itself, e.g. a read of memory that is gone fails with
// EIO, which run-pre matching reports as a code mismatch, or an injected
// mmap fails and placement reports no room.
func exited(pid int, err error) error {
	if err == nil || errors.Is(err, ptrace.ErrExited) || errors.Is(err, unix.ESRCH) || !procfs.Exiting(pid) {
		return err
	}
	return fmt.Errorf("process %d: %w (%v)", pid, ptrace.ErrExited, err)
}

// stopWorld stops every thread again, also those created meanwhile. The
// memory map is not read again here: the world is stopped from now on, and
// nothing in the check depends on mappings made since the unwinder was.
func (s *session) stopWorld() error {
	regs, err := s.p.StopRegs()
	s.regs = regs
	return err
}

func (s *session) refresh() error {
	maps, err := procfs.ReadMaps(s.pid)
	if err != nil {
		return fmt.Errorf("process %d: %w", s.pid, err)
	}
	s.maps = maps
	s.mods = modules(maps)
	return nil
}

func (s *session) detach() {
	if s.p != nil {
		s.p.Detach()
		s.p = nil
	}
	if s.lock != nil {
		s.lock.Close() // drops the flock: the next livesplice may go
		s.lock = nil
	}
}

// syscall runs a system call in the target.
func (s *session) syscall(nr uint64, args ...uint64) (uint64, error) {
	rax, err := s.p.Syscall(nr, args...)
	if r := int64(rax); err != nil && r >= -4095 && r <= -1 && errors.Is(err, unix.Errno(-r)) {
		return rax, &SyscallError{Nr: nr, Errno: unix.Errno(-r)}
	}
	return rax, err
}

// SyscallError is a system call that livesplice ran inside the target and
// the target's kernel refused: a limit of the target itself (its seccomp
// filter, rlimits, memory). It deliberately does not unwrap to its errno: an
// EPERM here is not a permission to trace the process (exit 7, "run as
// root"), which a seccomp filter returning EPERM would otherwise be taken for.
type SyscallError struct {
	Nr    uint64
	Errno unix.Errno
}

func (e *SyscallError) Error() string {
	name := fmt.Sprintf("system call %d", e.Nr)
	switch e.Nr {
	case unix.SYS_MMAP:
		name = "mmap"
	case unix.SYS_MPROTECT:
		name = "mprotect"
	case unix.SYS_MUNMAP:
		name = "munmap"
	case unix.SYS_MEMFD_CREATE:
		name = "memfd_create"
	case unix.SYS_FTRUNCATE:
		name = "ftruncate"
	case unix.SYS_CLOSE:
		name = "close"
	}
	msg := fmt.Sprintf("%s in the process failed: %v", name, e.Errno)
	if e.Errno == unix.EPERM || e.Errno == unix.EACCES || e.Errno == unix.ENOSYS {
		msg += " (refused by the process's seccomp filter or security policy)"
	}
	return msg
}

// syscallErrno is the errno of a refused system call in the target, or 0.
func syscallErrno(err error) unix.Errno {
	var se *SyscallError
	if errors.As(err, &se) {
		return se.Errno
	}
	return 0
}

func (s *session) munmap(addr, size uint64) error {
	_, err := s.syscall(unix.SYS_MUNMAP, addr, size)
	return err
}

// syscalls runs calls in the target in one trip, from the chain code room
// at code (plan.chain), adding the system calls that make the state
// record's mapping if withState and the process has none; scratch is
// memory of ours for the memfd's name.
func (s *session) syscalls(code uint64, calls []ptrace.Call, scratch uint64, withState bool) error {
	first := len(calls) // the state record's calls, if any
	if withState && s.stateAddr == 0 {
		name := append([]byte(state.MappingName), 0)
		if err := s.p.WriteMem(scratch, name); err != nil {
			return fmt.Errorf("state record: %w", err)
		}
		defer s.p.WriteMem(scratch, make([]byte, len(name)))
		calls = append(calls, memfdCalls(first, scratch, state.Size, 0, unix.PROT_READ, unix.MAP_PRIVATE)...)
	}
	if len(calls) == 0 {
		return nil
	}
	// The protections are simply set again; a state record mapping made
	// by a lost run is found by its name and used rather than made twice.
	res, err := s.chain(code, calls, func(calls []ptrace.Call) ([]ptrace.Call, error) {
		if len(calls) == first {
			return calls, nil
		}
		if err := s.refresh(); err != nil {
			return nil, err
		}
		if m, ok := stateMapping(s.maps); ok {
			s.stateAddr = m.Start
			calls = calls[:first]
		}
		return calls, nil
	})
	if err == nil && len(res) == 0 {
		return nil // every call was made by a lost run
	}
	var ce *ptrace.CallError
	if errors.As(err, &ce) {
		what := "mprotect new code"
		if ce.Index >= first {
			what = "state record"
			if ce.Index > first {
				s.syscall(unix.SYS_CLOSE, res[first]) // the memfd
			}
		}
		return fmt.Errorf("%s: %w", what, &SyscallError{Nr: ce.Nr, Errno: ce.Errno})
	}
	if err != nil {
		return err
	}
	if len(calls) > first {
		s.stateAddr = res[first+2]
	}
	return nil
}

// memfdCalls are the calls of a chain that make a memfd named by the
// string at name, size bytes, map it (mmap's addr, prot and flags) and
// close it, as calls first.. of the chain: the descriptor is the result
// of call first, the mapping's address that of call first+2.
func memfdCalls(first int, name, size, addr, prot, flags uint64) []ptrace.Call {
	fd := map[int]int{0: first}
	return []ptrace.Call{
		{Nr: unix.SYS_MEMFD_CREATE, Args: [6]uint64{name, unix.MFD_CLOEXEC}},
		{Nr: unix.SYS_FTRUNCATE, Args: [6]uint64{0, size}, From: fd},
		{Nr: unix.SYS_MMAP, Args: [6]uint64{addr, size, prot, flags, 0, 0}, From: map[int]int{4: first}},
		{Nr: unix.SYS_CLOSE, From: fd},
	}
}

// chain runs calls in one trip (ptrace.Syscalls from code). A livesplice
// descheduled for longer than the chain waits for it (a heavily loaded
// machine) finds its thread back in the program and the results lost:
// every call may have run. It then runs them again, at most three more
// times, as again (if not nil) says: again may drop calls whose effect a
// lost run already made; none left returns no results and no error.
func (s *session) chain(code uint64, calls []ptrace.Call, again func([]ptrace.Call) ([]ptrace.Call, error)) ([]uint64, error) {
	res, err := s.p.Syscalls(code, calls)
	for try := 0; try < 3 && errors.Is(err, ptrace.ErrStalled); try++ {
		s.opt.logf("system calls in the process: %v; again", err)
		if again != nil {
			if calls, err = again(calls); err != nil {
				return nil, err
			}
			if len(calls) == 0 {
				return nil, nil
			}
		}
		res, err = s.p.Syscalls(code, calls)
	}
	return res, err
}

// step is a group of writes of a commit and the fault point after it.
type step struct {
	point  string
	writes []ptrace.Write
}

// run performs the steps' writes in order, in one trip to the tracer. A
// fault-injection build writes them one by one instead and may die after
// any single write ("point:K" after the K-th write of a step, from 1, and
// "point" after the whole step).
func (s *session) run(steps []step, detach bool) error {
	if !fault.Enabled {
		var all []ptrace.Write
		for _, st := range steps {
			all = append(all, st.writes...)
		}
		if !detach {
			_, err := s.p.WriteMems(all)
			return err
		}
		// The last act: write and let go in one trip to the tracer.
		n, err := s.p.WriteMemsDetach(all)
		if n < len(all) {
			return err
		}
		if err != nil {
			s.opt.logf("detach: %v", err)
		}
		s.p = nil
		s.detach()
		return nil
	}
	for _, st := range steps {
		for k, w := range st.writes {
			if _, err := s.p.WriteMems([]ptrace.Write{w}); err != nil {
				return err
			}
			fault.Point(fmt.Sprintf("%s:%d", st.point, k+1))
		}
		fault.Point(st.point)
	}
	return nil
}

// flagWrites sets every commit flag to v.
func flagWrites(flags []uint64, v byte) []ptrace.Write {
	var out []ptrace.Write
	for _, f := range flags {
		out = append(out, ptrace.Write{Addr: f, Data: []byte{v}})
	}
	return out
}

// stateWrites encodes the current record as the two writes that store it:
// the body into the slot not in use, then the header that switches to it
// (one write: a reader, or a livesplice killed in between, sees the old
// record or the new one). The slot flips for the next record.
func (s *session) stateWrites() ([]ptrace.Write, error) {
	if s.stateAddr == 0 {
		return nil, fmt.Errorf("state record: no mapping")
	}
	next := 1 - s.slot
	h, b, err := state.Encode(s.rec, next)
	if err != nil {
		return nil, err
	}
	s.slot = next
	return []ptrace.Write{
		{Addr: s.stateAddr + state.SlotOffset(next), Data: b},
		{Addr: s.stateAddr, Data: h},
	}, nil
}

// writeState stores the record in the target.
func (s *session) writeState() error {
	// Write into the slot the target's header does not point at, whatever
	// precomputed writes were or were not carried out before.
	h := make([]byte, state.HeaderSize)
	if s.stateAddr != 0 && s.p.ReadMem(s.stateAddr, h) == nil {
		if off, _, err := state.DecodeHeader(h); err == nil {
			s.slot = state.Slot(off)
		}
	}
	ws, err := s.stateWrites()
	if err != nil {
		return err
	}
	_, err = s.p.WriteMems(ws)
	return err
}
