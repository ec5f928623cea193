package process

import (
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"livesplice/internal/amd64"
	"livesplice/internal/fault"
	"livesplice/internal/procfs"
	"livesplice/internal/ptrace"
	"livesplice/internal/unwind"
)

// span is a range of code that no thread may be executing, or return
// into, when trampolines are written or removed.
type span struct {
	lo, hi uint64
	name   string
}

// busy describes a thread as the check saw it; inside a span if name is
// not empty.
type busy struct {
	tid      int
	name     string
	rip      uint64
	frames   []unwind.Frame
	complete bool     // frames unwound to the end of the stack
	words    []uint64 // every stack word, where unwinding failed
}

func inSpans(spans []span, pc uint64) (string, bool) {
	for _, s := range spans {
		if pc >= s.lo && pc < s.hi {
			return s.name, true
		}
	}
	return "", false
}

// check unwinds every thread; conservative where unwinding fails: then any
// stack word pointing into a span counts as busy.
func (s *session) check(u *unwind.Unwinder, spans []span) ([]busy, error) {
	s.cache.reset() // threads may have run since the last check
	all := s.regs   // read by stopWorld, if it just ran
	s.regs = nil
	if all == nil {
		var err error
		if all, err = s.p.AllRegs(); err != nil {
			return nil, err
		}
	}
	var tids []int
	for tid := range all {
		if !s.clean[tid] {
			tids = append(tids, tid)
		}
	}
	sort.Ints(tids)
	results, errs := checkThreads(u, spans, all, tids)
	var out []busy
	if s.views == nil {
		s.views = map[int]busy{}
	}
	for i := range tids {
		if errs[i] != nil {
			return nil, errs[i]
		}
		s.views[tids[i]] = results[i]
		if results[i].name != "" {
			out = append(out, results[i])
		}
	}
	return out, nil
}

// checkThreads checks the threads tids (their registers in all) in
// parallel: the threads are stopped, so the cores are free.
func checkThreads(u *unwind.Unwinder, spans []span, all map[int]unix.PtraceRegs, tids []int) ([]busy, []error) {
	results := make([]busy, len(tids))
	errs := make([]error, len(tids))
	if len(tids) == 1 {
		// No goroutine to wait for: the caller is a locked tracer thread,
		// and parking it costs more than the check.
		results[0], errs[0] = checkOne(u, spans, all, tids[0])
		return results, errs
	}
	var wg sync.WaitGroup
	next := make(chan int, len(tids))
	for i := range tids {
		next <- i
	}
	close(next)
	for w := 0; w < min(runtime.NumCPU(), len(tids)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				results[i], errs[i] = checkOne(u, spans, all, tids[i])
			}
		}()
	}
	wg.Wait()
	return results, errs
}

func checkOne(u *unwind.Unwinder, spans []span, all map[int]unix.PtraceRegs, tid int) (busy, error) {
	regs, ok := all[tid]
	if !ok {
		return busy{}, fmt.Errorf("thread %d: no registers", tid)
	}
	return checkThread(u, spans, tid, &regs)
}

// precheck stops the threads that sleep in a system call (the program
// cannot see that) and checks their stacks while the rest still runs. A
// stopped thread's stack cannot change, so the threads found clean need no
// second look once the world is stopped: the stop window is then as short
// as the few threads that were running.
func (s *session) precheck(u *unwind.Unwinder, spans []span) {
	s.clean = map[int]bool{}
	blocked := procfs.Blocked(s.pid)
	if len(blocked) == 0 || s.p.StopSome(blocked) != nil {
		return
	}
	all, err := s.p.AllRegs()
	if err != nil {
		return
	}
	s.cache.reset()
	results, errs := checkThreads(u, spans, all, blocked)
	s.views = map[int]busy{}
	for i, tid := range blocked {
		if errs[i] == nil && results[i].name == "" {
			s.clean[tid] = true
			s.views[tid] = results[i]
		}
	}
}

// checkThread tells whether one thread is inside a span (name empty: no).
func checkThread(u *unwind.Unwinder, spans []span, tid int, regs *unix.PtraceRegs) (busy, error) {
	b := busy{tid: tid, rip: regs.Rip}
	frames, uerr := u.Unwind(regs, 512)
	b.frames, b.complete = frames, uerr == nil
	for i, f := range frames {
		pc := f.PC
		if i > 0 {
			pc--
		}
		if name, ok := inSpans(spans, pc); ok {
			b.name = name
		}
	}
	if uerr != nil {
		if name, ok := inSpans(spans, regs.Rip); ok {
			b.name = name
		}
		words, werr := u.StackWords(regs)
		if werr != nil {
			return b, fmt.Errorf("thread %d: %w", tid, werr)
		}
		b.words = words
		for _, w := range words {
			if name, ok := inSpans(spans, w); ok {
				b.name = name
			}
		}
	}
	return b, nil
}

// waitSafe returns with every thread stopped and none inside spans, or
// ErrBusy after the deadline. A busy thread whose stack unwinds exactly
// has the return address of its outermost frame inside spans sent through
// a return stub (retstub.go); the process runs, each such thread under
// PTRACE_SYSCALL until it makes its stub's system call, where it is held
// stopped (it cannot re-enter), while the others run on. Once every
// redirected thread is held, the world is stopped and checked again:
// threads that entered meanwhile are redirected in turn, and the check
// ends when none is busy. A busy thread that cannot be redirected is
// waited for the old way: the process runs a little and is checked again,
// with back-off. In such a round, or after a round where no redirected
// thread reached its stub, the held threads are let go (their redirects
// used up): a splice that may never come does not freeze them. Nothing is
// left for the program to trip on if livesplice dies: stubs forward to
// the original return address by themselves.
func (s *session) waitSafe(u *unwind.Unwinder, spans []span) error {
	deadline := time.Now().Add(s.opt.deadline())
	backoff := time.Millisecond
	// A redirected thread may leave its frame another way (an exception,
	// longjmp) and never come to its stub: each round of waiting is
	// bounded, growing, and the next round redirects it again.
	round := 50 * time.Millisecond
	var reds []redirect
	taken := map[int]int{} // held threads: the stub each stopped at
	// release lets the held threads go: their redirects are used up (the
	// stub cleared its pending byte), so they are dropped.
	release := func() {
		if len(taken) == 0 {
			return
		}
		kept := reds[:0]
		for _, r := range reds {
			if i, ok := taken[r.tid]; ok && i == r.stub {
				continue
			}
			kept = append(kept, r)
		}
		reds = kept
		taken = map[int]int{}
	}
	stalled := false // the last round held no new thread
	noStubs := false
	// putBack ends the wait: the returns redirected and not taken go
	// back, on success (frames left another way) as on failure.
	putBack := func(err error) error {
		s.unredirect(reds, taken)
		return err
	}
	for tries := 1; ; tries++ {
		b, err := s.check(u, spans)
		if err != nil {
			return putBack(err)
		}
		if len(b) == 0 {
			return putBack(nil)
		}
		if time.Now().After(deadline) {
			return putBack(fmt.Errorf("%w: %s in thread %d (still busy after %d tries, %v)", ErrBusy, b[0].name, b[0].tid, tries, s.opt.deadline()))
		}
		if !noStubs && !s.stubs.ready {
			// The stubs are made and their frames handed to libgcc
			// while the program runs (but for the worker): the world
			// is stopped only for checks and writes.
			if err := s.p.ResumeExcept(s.worker); err != nil {
				s.stopWorld()
				return putBack(err)
			}
			if err := s.ensureStubs(); err != nil {
				// A process that refuses memfds (seccomp) is waited for
				// the old way.
				s.opt.logf("safety check: no return stubs (%v); waiting for busy threads instead", err)
				noStubs = true
			} else if err := s.registerStubFrames(); err != nil {
				// Without its frames, an exception through a stub
				// would end a C++ program: no redirects.
				s.opt.logf("safety check: %v; waiting for busy threads instead", err)
				noStubs = true
				s.stubs.ready = false
			}
			s.clean = nil // every thread ran: check all next time
			if err := s.again(&u); err != nil {
				return putBack(err)
			}
			continue
		}
		var watch map[int]uint64
		if s.stubs.ready {
			watch, err = s.redirectBusy(b, spans, &reds)
			if err != nil {
				return putBack(err)
			}
		}
		s.clean = nil // every thread runs again: check all next time
		if len(watch) < len(b) || stalled {
			// A busy thread that cannot be redirected, or a round that
			// held no new thread: holding the caught ones until the
			// deadline would freeze them for a splice that may not
			// come.
			release()
		}
		held := map[int]bool{}
		for tid := range taken {
			held[tid] = true
		}
		if len(watch) > 0 {
			fault.Point("safety:redirected")
			until := time.Now().Add(round)
			if until.After(deadline) {
				until = deadline
			}
			reached, err := s.p.RunToStubs(watch, amd64.ReturnStubNr, held, until)
			for tid := range reached {
				taken[tid] = s.stubs.index(watch[tid])
			}
			stalled = len(reached) == 0
			s.opt.logf("safety check: %d busy threads sent through return stubs, %d held there", len(watch), len(reached))
			if err != nil && !errors.Is(err, ptrace.ErrTimeout) {
				s.stopWorld()
				return putBack(err)
			}
			round = min(2*round, time.Second)
			fault.Point("safety:held")
			if len(reached) == 0 {
				// None came (a process stopped by a signal stays
				// stopped): do not spin.
				time.Sleep(backoff)
				backoff = min(backoff*2, 100*time.Millisecond)
			}
		} else {
			// No thread to watch, and none held (released above).
			if err := s.p.Resume(); err != nil {
				s.stopWorld()
				return putBack(err)
			}
			time.Sleep(backoff)
			backoff = min(backoff*2, 100*time.Millisecond)
		}
		if err := s.again(&u); err != nil {
			return putBack(err)
		}
	}
}

// again stops the world and makes a fresh unwinder for the next check.
func (s *session) again(u **unwind.Unwinder) error {
	if err := s.stopWorld(); err != nil {
		return err
	}
	if err := s.refresh(); err != nil {
		return err
	}
	*u = unwind.New(s.pid, s.maps, s.cache)
	s.addFrames(*u)
	return nil
}

// pageCache serves the unwinder's many small reads of stacks from whole
// pages, read once per check: every read of the target is a round trip to
// the tracer thread, and the world is stopped while they happen.
type pageCache struct {
	mem   memReader
	mu    sync.Mutex
	pages map[uint64][]byte
}

const cachePage = 4096

func (c *pageCache) reset() {
	c.mu.Lock()
	c.pages = map[uint64][]byte{}
	c.mu.Unlock()
}

func (c *pageCache) ReadMem(addr uint64, b []byte) error {
	if len(b) > cachePage {
		return c.mem.ReadMem(addr, b)
	}
	for n := 0; n < len(b); {
		a := addr + uint64(n)
		base := a &^ (cachePage - 1)
		c.mu.Lock()
		pg, ok := c.pages[base]
		c.mu.Unlock()
		if !ok {
			pg = make([]byte, cachePage)
			if err := c.mem.ReadMem(base, pg); err != nil {
				return c.mem.ReadMem(addr, b) // a page not wholly mapped
			}
			c.mu.Lock()
			if c.pages != nil {
				c.pages[base] = pg
			}
			c.mu.Unlock()
		}
		n += copy(b[n:], pg[a-base:])
	}
	return nil
}

// placedFrames is an applied update's .eh_frame copy, read from the
// process once per session (before any stop) and given to every unwinder
// the session makes.
type placedFrames struct {
	id         string
	start, end uint64 // the code it describes
	addr       uint64
	data       []byte
}

// readFrames reads the call frame information of the code that applied
// updates placed, so that a thread inside new code is unwound exactly
// rather than by the conservative stack scan. Frames that cannot be read
// are left out: the scan still covers them.
func (s *session) readFrames() {
	s.frames = nil
	if s.rec == nil {
		return
	}
	for _, a := range s.rec.Updates {
		for _, fr := range a.Frames {
			for _, r := range a.Regions {
				if fr.Addr < r.Addr || fr.Addr >= r.Addr+r.Size || fr.Size > 1<<24 {
					continue
				}
				b := make([]byte, fr.Size)
				if s.p.ReadMem(fr.Addr, b) == nil {
					s.frames = append(s.frames, placedFrames{a.ID, r.Addr, r.Addr + r.Text, fr.Addr, b})
				}
			}
		}
	}
}

// addFrames gives u what readFrames read: no memory is read here, since a
// retry of the safety check calls it with the world stopped.
func (s *session) addFrames(u *unwind.Unwinder) {
	for _, f := range s.frames {
		u.AddFrames(f.id, f.start, f.end, f.data, f.addr)
	}
	s.addStubFrames(u)
}

// unwinder makes an unwinder for the current maps and loads the unwind
// tables of the code the kept thread runs in (the executable and libc,
// usually), so that little is left to parse while the world is stopped.
func (s *session) unwinder() *unwind.Unwinder {
	s.cache = &pageCache{mem: s.p}
	if r, ok := findStubs(s.maps); ok {
		s.stubs = r // an earlier livesplice's: returns may be pending through it
	}
	u := unwind.New(s.pid, s.maps, s.cache)
	s.readFrames()
	s.addFrames(u)
	if regs, err := s.p.GetRegs(s.worker); err == nil {
		u.Unwind(&regs, 64)
	}
	return u
}
