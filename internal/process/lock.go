package process

import (
	"fmt"
	"livesplice/internal/target"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLocked is wrapped when another livesplice works on the process past
// the deadline.
var ErrLocked = target.Mark(target.ErrBusy, "another livesplice is working on the process")

// lockDirs are tried in order for the per-process lock files.
var lockDirs = []string{"/run/livesplice", filepath.Join(os.TempDir(), "livesplice-locks")}

// targetLock is a held per-process lock (lockTarget).
type targetLock struct {
	fd   int // raw: an os.File costs six more system calls here
	path string
}

// Close removes the lock file and drops the lock. The file goes first,
// while still held, so that a fleet run leaves no file per process behind;
// a command that opened it meanwhile notices (lockTarget) and starts over.
func (l *targetLock) Close() error {
	os.Remove(l.path)
	return unix.Close(l.fd)
}

// lockTarget makes livesplice commands on one process take turns: two at
// once would race for its threads (only one tracer is allowed) and for its
// state record. The lock is an flock on a file named after the pid, held
// until the command detaches; the kernel drops it if livesplice dies.
func lockTarget(pid int, wait time.Duration) (*targetLock, error) {
	deadline := time.Now().Add(wait)
	for {
		l, err := openLock(pid)
		if err != nil {
			return nil, err
		}
		for {
			err := unix.Flock(l.fd, unix.LOCK_EX|unix.LOCK_NB)
			if err == nil {
				break
			}
			if err != unix.EWOULDBLOCK && err != unix.EINTR {
				unix.Close(l.fd)
				return nil, fmt.Errorf("lock process %d: %w", pid, err)
			}
			if time.Now().After(deadline) {
				unix.Close(l.fd)
				return nil, fmt.Errorf("process %d: %w (waited %v; try again later)", pid, ErrLocked, wait)
			}
			time.Sleep(5 * time.Millisecond)
		}
		// The holder before us removed the file as it let go: the lock
		// we got is on a file nobody else will open. Take the new one.
		var held, now unix.Stat_t
		if unix.Fstat(l.fd, &held) == nil && unix.Stat(l.path, &now) == nil &&
			held.Dev == now.Dev && held.Ino == now.Ino {
			return l, nil
		}
		unix.Close(l.fd)
	}
}

// openLock opens (creating) the lock file of pid in the first usable
// directory.
func openLock(pid int) (*targetLock, error) {
	var err error
	for _, dir := range lockDirs {
		if e := lockDir(dir); e != nil {
			err = e
			continue
		}
		path := filepath.Join(dir, fmt.Sprintf("%d.lock", pid))
		fd, e := unix.Open(path, unix.O_RDONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
		if e == nil {
			return &targetLock{fd: fd, path: path}, nil
		}
		err = &os.PathError{Op: "open", Path: path, Err: e}
	}
	return nil, fmt.Errorf("lock process %d: %w", pid, err)
}

// readyDirs are the lock directories made (and opened to every user) by
// this livesplice: once each, not once per process of a fleet run.
var readyDirs sync.Map

func lockDir(dir string) error {
	if _, ok := readyDirs.Load(dir); ok {
		return nil
	}
	if err := os.MkdirAll(dir, 0o1777); err != nil {
		return err
	}
	os.Chmod(dir, 0o1777)
	readyDirs.Store(dir, true)
	return nil
}
