package process

import (
	"sync"
	"testing"
)

// The per-process lock lets one handler at a time work on a pid, and
// forgets the pid once nobody holds or waits for it.
func TestWatchLockExcludes(t *testing.T) {
	w := &watcher{busy: map[int]*pidLock{}}
	var inside, most int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				unlock := w.lock(42)
				mu.Lock()
				inside++
				most = max(most, inside)
				mu.Unlock()
				mu.Lock()
				inside--
				mu.Unlock()
				unlock()
			}
		}()
	}
	wg.Wait()
	if most != 1 {
		t.Fatalf("%d handlers held pid 42 at once", most)
	}
	if len(w.busy) != 0 {
		t.Fatalf("locks left behind: %v", w.busy)
	}
}
