package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"livesplice/internal/procevents"
	"livesplice/internal/procfs"
	"livesplice/internal/ptrace"
	"livesplice/internal/update"
)

// WatchEvent is one process that watch patched, or tried to.
type WatchEvent struct {
	Pid    int    `json:"pid"`
	Update string `json:"update"`
	Result string `json:"result"` // "patched", "skipped" or "failed"
	// When: "entry" (a new process, stopped before its program ran) or
	// "running" (a process that ran already: at start, on a rescan, or
	// caught too late at its exec).
	When   string `json:"when"`
	Reason string `json:"reason,omitempty"` // why it failed or was skipped, or was not stopped at its entry
}

// WatchOptions tune Watch.
type WatchOptions struct {
	Options
	// Rescan, if set, also patches every running process this often: it
	// catches libraries loaded later with dlopen and events the kernel
	// dropped.
	Rescan time.Duration
	// Report receives every event, one call at a time.
	Report func(WatchEvent)
	// Ready is called once the exec events are subscribed to and the
	// processes running at start have been patched.
	Ready func()
}

// watcher is one Watch run.
type watcher struct {
	files []*update.File
	opt   WatchOptions
	self  int
	mu    sync.Mutex
	busy  map[int]*pidLock // per-process: one handler at a time
	repMu sync.Mutex
}

// Watch keeps applying files (in order) to every process that maps one of
// their targets: those running when it starts, and each new one at its
// exec, before its program runs. It returns when ctx is done, after every
// process being handled is finished and let go; the processes stay
// patched.
func Watch(ctx context.Context, files []*update.File, opt WatchOptions) error {
	for _, f := range files {
		if f.Kind != update.KindProcess {
			return fmt.Errorf("update %s is a %s update, not for a process", f.ID, f.Kind)
		}
	}
	// Without CAP_SYS_PTRACE every process but our own is out of reach,
	// while the connector may still send events: refuse at once.
	if !canTraceAll() {
		return fmt.Errorf("needs CAP_SYS_PTRACE to trace every process: %w", ErrNotPermitted)
	}
	l, err := procevents.Listen()
	if err != nil {
		return err
	}
	defer l.Close()
	w := &watcher{files: files, opt: opt, self: os.Getpid(), busy: map[int]*pidLock{}}
	// Subscribed first, scanned second: a process exec'd in between is
	// seen by both, and the per-process lock orders them.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.scan()
		if opt.Ready != nil {
			opt.Ready()
		}
	}()
	var tick <-chan time.Time
	if opt.Rescan > 0 {
		t := time.NewTicker(opt.Rescan)
		defer t.Stop()
		tick = t.C
	}
	events := make(chan procevents.Exec, 1024)
	overrun := make(chan struct{}, 1)
	recvDone := make(chan error, 1)
	go func() {
		for {
			ev, err := l.Next(ctx)
			if errors.Is(err, procevents.ErrOverrun) {
				select {
				case overrun <- struct{}{}:
				default:
				}
				continue
			}
			if err != nil {
				recvDone <- err
				return
			}
			events <- ev
		}
	}()
	defer wg.Wait()
	// At most this many new processes are handled at once (each holds a
	// locked OS thread while it runs to its entry point).
	handlers := make(chan struct{}, 64)
	var scanning atomic.Bool
	rescan := func() {
		if !scanning.CompareAndSwap(false, true) {
			return // one scan at a time; the running one catches up
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer scanning.Store(false)
			w.scan()
		}()
	}
	var lastOverrun time.Time
	pending := false
	catchUp := time.NewTicker(overrunGap)
	defer catchUp.Stop()
	for {
		select {
		case ev := <-events:
			if ev.Tgid == w.self || ev.Tgid <= 1 {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				handlers <- struct{}{}
				defer func() { <-handlers }()
				w.onExec(ev.Tgid)
			}()
		case <-overrun:
			// Some execs were lost: catch them as running processes, at
			// most once per overrunGap however often the buffer overruns.
			if time.Since(lastOverrun) >= overrunGap {
				lastOverrun = time.Now()
				rescan()
			} else {
				pending = true
			}
		case <-catchUp.C:
			if pending && time.Since(lastOverrun) >= overrunGap {
				pending = false
				lastOverrun = time.Now()
				rescan()
			}
		case <-tick:
			rescan()
		case err := <-recvDone:
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// overrunGap spaces the rescans that lost events call for.
const overrunGap = 5 * time.Second

// canTraceAll reports whether this process has CAP_SYS_PTRACE.
func canTraceAll() bool {
	v, err := procfs.Status(os.Getpid(), "CapEff")
	if err != nil {
		return false
	}
	caps, err := strconv.ParseUint(v, 16, 64)
	return err == nil && caps&(1<<unix.CAP_SYS_PTRACE) != 0
}

// pidLock is the lock of one process and how many want it.
type pidLock struct {
	mu   sync.Mutex
	refs int
}

// lock serialises the handling of one process.
func (w *watcher) lock(pid int) func() {
	w.mu.Lock()
	l := w.busy[pid]
	if l == nil {
		l = &pidLock{}
		w.busy[pid] = l
	}
	l.refs++
	w.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		w.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(w.busy, pid)
		}
		w.mu.Unlock()
	}
}

func (w *watcher) report(ev WatchEvent) {
	if w.opt.Report == nil {
		return
	}
	w.repMu.Lock()
	defer w.repMu.Unlock()
	w.opt.Report(ev)
}

// scan applies every file to the running processes that map its targets
// and do not have it yet.
func (w *watcher) scan() {
	ds := w.discoveries()
	forEach(procfs.Others(), func(pid int) (Outcome, bool) {
		unlock := w.lock(pid)
		defer unlock()
		w.applyFiles(pid, ds, "running", "", true)
		return Outcome{}, false
	})
}

// discoveries starts a discovery for each file (one per scan or event).
func (w *watcher) discoveries() []*discovery {
	var ds []*discovery
	for _, f := range w.files {
		ds = append(ds, newDiscovery(f))
	}
	return ds
}

// applyFiles applies each file that pid maps a target of. note says why
// a new process was patched as a running one; quietSkips leaves out
// processes that have an update already (a rescan).
func (w *watcher) applyFiles(pid int, ds []*discovery, when, note string, quietSkips bool) {
	maps, err := procfs.ReadMaps(pid)
	if err != nil {
		return
	}
	mods := modules(maps)
	for _, d := range ds {
		f := d.f
		if !d.mapsIn(pid, mods) {
			continue
		}
		if quietSkips && hasUpdate(pid, f.ID) {
			continue
		}
		ev := WatchEvent{Pid: pid, Update: f.ID, When: when, Result: "patched", Reason: note}
		err := Apply(pid, f, w.opt.Options)
		switch {
		case err == nil:
		case errors.Is(err, ErrAlreadyApplied):
			if quietSkips {
				continue
			}
			ev.Result, ev.Reason = "skipped", oneLine(err)
		case errors.Is(err, ErrNotMapped), procfs.Exiting(pid):
			ev.Result, ev.Reason = "skipped", oneLine(err)
		default:
			ev.Result, ev.Reason = "failed", oneLine(err)
		}
		w.report(ev)
	}
}

// hasUpdate reports whether pid's state record lists update id.
func hasUpdate(pid int, id string) bool {
	shown, err := Show(pid)
	if err != nil {
		return false
	}
	for _, s := range shown {
		if s.ID == id {
			return true
		}
	}
	return false
}

// onExec handles a process that has just exec'd: if it maps a target, or
// is dynamically linked and a target is a library it may load, it is
// stopped at its entry point, patched, and let go.
func (w *watcher) onExec(pid int) {
	unlock := w.lock(pid)
	defer unlock()
	maps, err := procfs.ReadMaps(pid)
	if err != nil {
		return // gone already
	}
	mods := modules(maps)
	ds := w.discoveries()
	want := false
	for _, d := range ds {
		want = want || d.mapsIn(pid, mods) || (len(mods) > 1 && hasLibraryTarget(d.f))
	}
	if !want {
		return
	}
	// At the entry point: is a target mapped now that the loader is done?
	mapsTarget := func() bool {
		maps, err := procfs.ReadMaps(pid)
		if err != nil {
			return false
		}
		mods := modules(maps)
		for _, d := range ds {
			if d.mapsIn(pid, mods) {
				return true
			}
		}
		return false
	}
	pk, err := stopAtEntry(pid, w.opt.deadline(), mapsTarget)
	switch {
	case err == nil && pk == nil:
		// No target among its libraries: it went on at once.
	case err == nil:
		w.applyFiles(pid, ds, "entry", "", false)
		if err := pk.unpark(); err != nil {
			w.report(WatchEvent{Pid: pid, Result: "failed", When: "entry", Reason: oneLine(err)})
		}
	case errors.Is(err, ptrace.ErrReExec), errors.Is(err, unix.ESRCH), procfs.Exiting(pid):
		// Another exec has its own event; a process gone needs nothing.
	default:
		// Past its entry already, or it could not be stopped there (a
		// tracer such as gdb holds it): patch it as a running process.
		w.applyFiles(pid, ds, "running", "not stopped at its entry point: "+oneLine(err), false)
	}
}

// hasLibraryTarget reports whether f changes a shared library (which a
// new process loads after its exec).
func hasLibraryTarget(f *update.File) bool {
	for _, t := range f.Targets {
		if t.Soname != "" || strings.Contains(filepath.Base(t.Path), ".so") {
			return true
		}
	}
	return false
}
