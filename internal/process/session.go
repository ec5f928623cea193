// Package process is the live patcher's backend for running processes: it
// attaches to every thread with ptrace, proves by run-pre matching that the
// running code is what an update was built for, places the new code near
// the old, waits until no thread is inside a function being replaced, then
// writes the trampolines — or changes nothing at all.
package process

import (
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/sys/unix"

	"livesplice/internal/procfs"
	"livesplice/internal/ptrace"
	"livesplice/internal/state"
)

// Options tune apply and undo.
type Options struct {
	// Deadline bounds the wait for threads to leave the functions being
	// replaced (default 10 s).
	Deadline time.Duration
	// Log receives progress lines (nil: quiet).
	Log io.Writer
}

// Sentinel errors that callers and tests match with errors.Is.
var (
	ErrBusy           = errors.New("function busy")
	ErrAlreadyApplied = errors.New("update already applied")
	ErrNotApplied     = errors.New("update not applied")
	ErrDependent      = errors.New("a later update depends on it")
	ErrNotMapped      = errors.New("not mapped")
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
}

func attach(pid int, opt Options) (*session, error) {
	p, err := ptrace.Attach(pid)
	if err != nil {
		return nil, err
	}
	s := &session{pid: pid, p: p, opt: opt}
	if err := s.refresh(); err != nil {
		p.Detach()
		return nil, err
	}
	s.rec, s.stateAddr, err = readState(p, s.maps)
	if err != nil {
		p.Detach()
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	return s, nil
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
}

// syscall runs a system call in the target.
func (s *session) syscall(nr uint64, args ...uint64) (uint64, error) {
	return s.p.Syscall(nr, args...)
}

func (s *session) munmap(addr, size uint64) error {
	_, err := s.syscall(unix.SYS_MUNMAP, addr, size)
	return err
}

// writeState stores the record in the target, making its mapping on first
// use; scratch is writable-through-/proc memory for the memfd's name.
func (s *session) writeState(scratch uint64) error {
	b, err := state.Encode(s.rec)
	if err != nil {
		return err
	}
	if s.stateAddr == 0 {
		name := append([]byte(state.MappingName), 0)
		if err := s.p.WriteMem(scratch, name); err != nil {
			return fmt.Errorf("state record: %w", err)
		}
		fd, err := s.syscall(unix.SYS_MEMFD_CREATE, scratch, unix.MFD_CLOEXEC)
		if err != nil {
			return fmt.Errorf("state record: memfd_create: %w", err)
		}
		_ = s.p.WriteMem(scratch, make([]byte, len(name)))
		if _, err := s.syscall(unix.SYS_FTRUNCATE, fd, state.Size); err != nil {
			s.syscall(unix.SYS_CLOSE, fd)
			return fmt.Errorf("state record: ftruncate: %w", err)
		}
		addr, err := s.syscall(unix.SYS_MMAP, 0, state.Size, unix.PROT_READ, unix.MAP_PRIVATE, fd, 0)
		s.syscall(unix.SYS_CLOSE, fd)
		if err != nil {
			return fmt.Errorf("state record: mmap: %w", err)
		}
		s.stateAddr = addr
	}
	// The body first, the header last: a reader never sees a header that
	// promises a body not yet written.
	if err := s.p.WriteMem(s.stateAddr+state.HeaderSize, b[state.HeaderSize:]); err != nil {
		return fmt.Errorf("state record: %w", err)
	}
	return s.p.WriteMem(s.stateAddr, b[:state.HeaderSize])
}
