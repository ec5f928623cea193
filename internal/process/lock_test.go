package process

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// No real process has this pid (pid_max is at most 2^22): only the lock
// file's name is made from it.
const lockTestPid = 1<<22 + 17

// The lock excludes, also while holders remove the file as they let go,
// and leaves no file behind.
func TestLockTarget(t *testing.T) {
	var inside, entered atomic.Int32
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Go(func() {
			for i := 0; i < 50; i++ {
				l, err := lockTarget(lockTestPid, 10*time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				if inside.Add(1) != 1 {
					t.Error("two holders of one process's lock")
				}
				entered.Add(1)
				time.Sleep(50 * time.Microsecond)
				inside.Add(-1)
				l.Close()
			}
		})
	}
	wg.Wait()
	if entered.Load() != 200 {
		t.Fatalf("%d of 200 entries", entered.Load())
	}
	l, err := lockTarget(lockTestPid, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	path := l.path
	if _, err := lockTarget(lockTestPid, 20*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock while held: %v, want ErrLocked", err)
	}
	l.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("lock file %s left behind: %v", path, err)
	}
}
