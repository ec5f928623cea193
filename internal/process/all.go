package process

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"

	"livesplice/internal/procfs"
	"livesplice/internal/state"
	"livesplice/internal/update"
)

// Outcome is what happened to one process in a fleet-wide operation.
type Outcome struct {
	Pid    int    `json:"pid"`
	Result string `json:"result"` // "patched", "unpatched", "skipped" or "failed"
	Reason string `json:"reason,omitempty"`
}

// targetNames are the file names an update's targets may be mapped as.
func targetNames(f *update.File) map[string]bool {
	names := map[string]bool{}
	for _, t := range f.Targets {
		names[filepath.Base(t.Path)] = true
		if t.Soname != "" {
			names[t.Soname] = true
		}
	}
	return names
}

// fleetWorkers is how many processes a fleet operation works on at once:
// more than the cores, as much of an apply is waiting for the target to
// stop or to run an injected system call.
var fleetWorkers = 4 * runtime.NumCPU()

// forEach runs op on pids, a few at a time, and returns the outcomes op
// kept (ok), in pid order. Each op runs its ptrace session on its own
// locked OS thread (internal/ptrace), so sessions run side by side.
func forEach(pids []int, op func(pid int) (o Outcome, ok bool)) []Outcome {
	// A fleet run allocates a little per process and keeps almost nothing:
	// collecting less often saves about a tenth of its CPU, for a heap that
	// stays a few tens of MiB.
	defer debug.SetGCPercent(debug.SetGCPercent(800))
	// Each worker's session runs on its own locked thread and blocks in
	// system calls and waits all the time; with fewer Ps than workers the
	// runtime hands Ps between those threads at every block (futex wake-ups
	// of other threads). One P per worker lets the kernel schedule them.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), fleetWorkers+1)))
	out := make([]Outcome, len(pids))
	kept := make([]bool, len(pids))
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < fleetWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				out[i], kept[i] = op(pids[i])
			}
		}()
	}
	for i := range pids {
		work <- i
	}
	close(work)
	wg.Wait()
	var res []Outcome
	for i, o := range out {
		if kept[i] {
			res = append(res, o)
		}
	}
	return res
}

// ApplyAll applies an update to every process that maps one of its
// targets (by build-id, file name or soname: discover.go; run-pre matching
// decides whether it is the code the update was built for). A process
// that cannot be patched is reported with the reason and the others go on.
func ApplyAll(f *update.File, opt Options) []Outcome {
	d := newDiscovery(f)
	opt.ids = d.seen
	// Finding the candidates (reading every process's maps) runs in the
	// workers too.
	return forEach(procfs.Others(), func(pid int) (Outcome, bool) {
		if !d.maps(pid) {
			return Outcome{}, false
		}
		err := Apply(pid, f, opt)
		switch {
		case err == nil:
			return Outcome{Pid: pid, Result: "patched"}, true
		case errors.Is(err, ErrAlreadyApplied), errors.Is(err, ErrNotMapped):
			return Outcome{Pid: pid, Result: "skipped", Reason: oneLine(err)}, true
		case procfs.Exiting(pid):
			return Outcome{Pid: pid, Result: "skipped", Reason: "exited"}, true
		}
		return Outcome{Pid: pid, Result: "failed", Reason: oneLine(err)}, true
	})
}

// UndoAll takes an update out of every process that has it applied.
func UndoAll(id string, opt Options) []Outcome {
	return forEach(procfs.Others(), func(pid int) (Outcome, bool) {
		if !hasUpdate(pid, id) {
			return Outcome{}, false
		}
		if err := Undo(pid, id, opt); err != nil {
			if procfs.Exiting(pid) {
				return Outcome{Pid: pid, Result: "skipped", Reason: "exited"}, true
			}
			return Outcome{Pid: pid, Result: "failed", Reason: oneLine(err)}, true
		}
		return Outcome{Pid: pid, Result: "unpatched"}, true
	})
}

// Patched is one process's applied updates, for show --all.
type Patched struct {
	Pid     int     `json:"pid"`
	Comm    string  `json:"comm"`
	Updates []Shown `json:"updates"`
}

// ShowAll lists every process that holds a livesplice state record with
// at least one update.
func ShowAll() []Patched {
	out := []Patched{}
	want := state.MappingPath
	for _, pid := range procfs.Others() {
		maps, err := procfs.ReadMaps(pid)
		if err != nil {
			continue
		}
		has := false
		for _, m := range maps {
			has = has || m.Path == want
		}
		if !has {
			continue
		}
		shown, err := Show(pid)
		if err != nil || len(shown) == 0 {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		out = append(out, Patched{Pid: pid, Comm: strings.TrimSpace(string(comm)), Updates: shown})
	}
	return out
}

// Summary counts outcomes: "patched 3, skipped 1, failed 0".
func Summary(outs []Outcome) (string, int) {
	count := map[string]int{}
	for _, o := range outs {
		count[o.Result]++
	}
	done := count["patched"] + count["unpatched"]
	verb := "patched"
	if count["unpatched"] > 0 {
		verb = "unpatched"
	}
	return fmt.Sprintf("%s %d, skipped %d, failed %d", verb, done, count["skipped"], count["failed"]), count["failed"]
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }
