package process

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLocked is wrapped when another livesplice works on the process past
// the deadline.
var ErrLocked = errors.New("another livesplice is working on the process")

// lockDirs are tried in order for the per-process lock files.
var lockDirs = []string{"/run/livesplice", filepath.Join(os.TempDir(), "livesplice-locks")}

// lockTarget makes livesplice commands on one process take turns: two at
// once would race for its threads (only one tracer is allowed) and for its
// state record. The lock is an flock on a file named after the pid, held
// until the command detaches; the kernel drops it if livesplice dies.
func lockTarget(pid int, wait time.Duration) (*os.File, error) {
	var f *os.File
	var err error
	for _, dir := range lockDirs {
		if e := os.MkdirAll(dir, 0o1777); e != nil {
			err = e
			continue
		}
		os.Chmod(dir, 0o1777)
		path := filepath.Join(dir, fmt.Sprintf("%d.lock", pid))
		f, err = os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o644)
		if err == nil {
			break
		}
	}
	if f == nil {
		return nil, fmt.Errorf("lock process %d: %w", pid, err)
	}
	deadline := time.Now().Add(wait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			f.Close()
			return nil, fmt.Errorf("lock process %d: %w", pid, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("process %d: %w (waited %v; try again later)", pid, ErrLocked, wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
