// Package agent is the machine's side of the update stream: it verifies
// the stream against the pinned root (TUF, with go-tuf's updater), finds
// the running processes whose executables or libraries an update is for
// (by build-id, or by name and soname), applies what they lack in the
// order updates were built on each other, records each target's effective
// version in its state directory, and re-applies the cached verified set
// offline (--init) after a process or the machine restarted.
package agent

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"livesplice/internal/process"
	"livesplice/internal/procfs"
	"livesplice/internal/state"
	"livesplice/internal/target"
	"livesplice/internal/update"
)

// Options are one agent run's settings.
type Options struct {
	Repo  string // stream URL (not needed with Offline)
	Trust string // pinned root metadata
	State string // state directory
	Pid   int    // only this process; 0: every process but init
	// Kernel also upgrades the running kernel; NoProcesses leaves the
	// processes alone (upgrade --kernel without --pid or --all).
	Kernel      bool
	NoProcesses bool
	// DryRun verifies the stream and reports what would be applied,
	// downloading and applying nothing.
	DryRun bool
	// Offline (--init) applies the cached verified set without the network.
	Offline bool
	// FetchOnly downloads and verifies the stream into the cache but
	// applies nothing (a scheduled run with auto_install off).
	FetchOnly bool
	Apply     process.Options
	Retries   int           // download attempts (default 3)
	RetryWait time.Duration // first wait between attempts (default 1 s)
	Log       io.Writer     // progress lines (nil: quiet)
	// Report posts the fleet report to Repo after an online run that
	// applied (opt-in); MachineID is the id it reports.
	Report    bool
	MachineID string
}

// Outcome is what happened to one update in one process.
type Outcome struct {
	Pid    int    `json:"pid"`
	Comm   string `json:"comm"`
	ID     string `json:"id"`
	Result string `json:"result"` // "applied", "already", "would apply", "undone", "would undo", "skipped" (exited), "failed"
	Reason string `json:"reason,omitempty"`
}

// Report is an agent run's result.
type Report struct {
	StreamVersion int64     `json:"stream_version"`
	Cached        []string  `json:"cached"`  // ids in the verified cache after the run
	Updates       []Cached  `json:"updates"` // the stream (or, offline, the cache) the run worked from
	Outcomes      []Outcome `json:"outcomes"`
	// Unfetched are the updates of the stream that could not be
	// downloaded or verified, with the reason, whether or not a running
	// process needs them.
	Unfetched map[string]string `json:"unfetched,omitempty"`
	// ReportError says why the fleet report could not be posted (the run
	// itself is not failed by it).
	ReportError  string `json:"report_error,omitempty"`
	verifyFailed bool
}

// Summary is the run's one line and the number of failures.
func (r *Report) Summary() (string, int) {
	n := map[string]int{}
	for _, o := range r.Outcomes {
		n[o.Result]++
	}
	if n["would apply"]+n["would undo"] > 0 {
		sum := fmt.Sprintf("stream version %d: would apply %d, already applied %d", r.StreamVersion, n["would apply"], n["already"])
		if n["would undo"] > 0 {
			sum += fmt.Sprintf(", would undo %d", n["would undo"])
		}
		return sum, 0
	}
	sum := fmt.Sprintf("stream version %d: applied %d, already applied %d, failed %d", r.StreamVersion, n["applied"], n["already"], n["failed"])
	if n["undone"] > 0 {
		sum += fmt.Sprintf(", undone %d", n["undone"])
	}
	if len(r.Unfetched) > 0 {
		sum += fmt.Sprintf(", not fetched %d", len(r.Unfetched))
	}
	// Failures count updates, each once: one not fetched may also have
	// failed in several processes.
	bad := map[string]bool{}
	for _, o := range r.Outcomes {
		if o.Result == "failed" {
			bad[o.ID] = true
		}
	}
	for id := range r.Unfetched {
		bad[id] = true
	}
	return sum, len(bad)
}

// Err is nil when nothing failed; it wraps ErrVerify when something was
// refused for failing verification.
func (r *Report) Err() error {
	_, failed := r.Summary()
	if failed == 0 {
		return nil
	}
	if r.verifyFailed {
		return fmt.Errorf("upgrade: %d updates failed: %w", failed, ErrVerify)
	}
	return fmt.Errorf("upgrade: %d updates failed", failed)
}

func (o Options) logf(format string, a ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", a...)
	}
}

// source is where a run's updates come from: the verified stream, or the
// cache for an offline run.
type source struct {
	version int64
	entries map[string]Cached
	files   func(Cached) ([]byte, error)
}

// run is one agent run.
type run struct {
	o       Options
	sd      *stateDir
	rec     *Record
	src     source
	rep     *Report
	revoked map[string]bool // undone wherever they run
	files   map[string][]byte
	fileErr map[string]error
	release string // the running kernel's
	now     string
}

// Upgrade runs the agent once: verify the stream (or read the cache),
// find what each running process lacks, fetch it, apply it in order.
func Upgrade(o Options) (*Report, error) {
	sd := &stateDir{dir: o.State}
	unlock, err := sd.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	rec, err := sd.read()
	if err != nil {
		return nil, err
	}
	r := &run{o: o, sd: sd, rec: rec, revoked: map[string]bool{}, files: map[string][]byte{}, fileErr: map[string]error{},
		src: source{version: rec.Stream.Version, entries: rec.Updates, files: sd.cachedFile},
		now: time.Now().UTC().Format(time.RFC3339)}
	r.release, _ = runningKernel.Release()
	for _, id := range rec.Revoked {
		r.revoked[id] = true
	}
	if !o.Offline {
		if err := r.refresh(); err != nil {
			return nil, err
		}
	}
	r.rep = &Report{StreamVersion: r.src.version, Outcomes: []Outcome{}, Updates: []Cached{}}
	for _, c := range r.src.entries {
		r.rep.Updates = append(r.rep.Updates, c)
	}
	sort.Slice(r.rep.Updates, func(i, j int) bool { return r.rep.Updates[i].ID < r.rep.Updates[j].ID })
	if !o.Offline && !o.DryRun {
		r.fillCache()
	}
	for id := range rec.Updates {
		r.rep.Cached = append(r.rep.Cached, id)
	}
	sort.Strings(r.rep.Cached)
	if o.FetchOnly {
		return r.rep, sd.write(rec)
	}
	if err := r.processes(); err != nil {
		return nil, err
	}
	if o.Kernel {
		outs, order := o.upgradeKernel(r.release, r.src.entries, r.revoked, r.fetch)
		r.add(outs)
		if outs != nil && !o.DryRun {
			rec.Targets["kernel@"+r.release] = &TargetRecord{Name: "kernel", BuildID: r.release, Updates: order, StreamVersion: r.src.version, At: r.now}
		}
	}
	if o.DryRun {
		return r.rep, nil
	}
	if err := sd.write(rec); err != nil {
		return r.rep, err
	}
	if o.Report && !o.Offline {
		if err := postReport(o, rec, r.rep); err != nil {
			r.rep.ReportError = oneLine(err)
		}
	}
	return r.rep, nil
}

// refresh verifies the stream and makes it the run's source; the updates
// it no longer lists that this agent took from it before are revoked.
func (r *run) refresh() error {
	c := &client{url: r.o.Repo, trust: r.o.Trust, state: r.sd, retries: r.o.Retries, wait: r.o.RetryWait}
	if c.retries == 0 {
		c.retries = 3
	}
	if c.wait == 0 {
		c.wait = time.Second
	}
	stream, err := c.refresh()
	if err != nil {
		return err
	}
	r.o.logf("stream %s: version %d, %d updates", r.o.Repo, stream.Version, len(stream.Updates))
	byID := map[string]Available{}
	r.src = source{version: stream.Version, entries: map[string]Cached{}}
	for _, a := range stream.Updates {
		r.src.entries[a.ID] = Cached{Entry: a.Entry, Length: a.Length, SHA256: a.SHA256}
		byID[a.ID] = a
	}
	r.src.files = func(c Cached) ([]byte, error) { return stream.download(byID[c.ID]) }
	for id := range r.rec.Updates {
		r.revoked[id] = true
	}
	for id := range r.revoked {
		if _, ok := r.src.entries[id]; ok {
			delete(r.revoked, id) // listed, or published again
		}
	}
	r.rec.Revoked = r.rec.Revoked[:0]
	for id := range r.revoked {
		r.rec.Revoked = append(r.rec.Revoked, id)
	}
	sort.Strings(r.rec.Revoked)
	r.rec.Stream.URL, r.rec.Stream.Version = r.o.Repo, stream.Version
	r.rec.Stream.Checked = r.now
	return nil
}

// fetch returns an update's verified bytes, once per run.
func (r *run) fetch(id string) ([]byte, error) {
	if d, ok := r.files[id]; ok {
		return d, nil
	}
	if err := r.fileErr[id]; err != nil {
		return nil, err
	}
	c, ok := r.src.entries[id]
	if !ok {
		return nil, fmt.Errorf("update %s is not in the stream", id)
	}
	d, err := r.src.files(c)
	if err != nil {
		r.fileErr[id] = err
		return nil, err
	}
	r.files[id] = d
	return d, nil
}

// fillCache makes the verified cache the stream's process updates and the
// kernel updates for the running release (so that --init can apply them
// to a process started later, or at boot), and drops what the stream no
// longer has.
func (r *run) fillCache() {
	for id, c := range r.src.entries {
		if c.Kind != update.KindProcess && !forKernel(c, r.release) {
			continue
		}
		if _, err := r.fetch(id); err != nil {
			if r.rep.Unfetched == nil {
				r.rep.Unfetched = map[string]string{}
			}
			r.rep.Unfetched[id] = oneLine(err)
			r.rep.verifyFailed = r.rep.verifyFailed || errors.Is(err, ErrVerify)
			continue
		}
		r.rec.Updates[id] = c
	}
	for id := range r.rec.Updates {
		if _, ok := r.src.entries[id]; !ok {
			delete(r.rec.Updates, id)
		}
	}
}

// add records outcomes; a failure caused by a file that failed
// verification makes the run a verification failure.
func (r *run) add(outs []Outcome) {
	for _, out := range outs {
		if out.Result == "failed" && errors.Is(r.fileErr[out.ID], ErrVerify) {
			r.rep.verifyFailed = true
		}
	}
	r.rep.Outcomes = append(r.rep.Outcomes, outs...)
}

// processes upgrades every process in scope (or only --pid), undoing the
// revoked updates first, and records each target's effective version.
func (r *run) processes() error {
	pids := procfs.Others()
	if r.o.Pid > 0 {
		pids = []int{r.o.Pid}
	}
	if r.o.NoProcesses {
		pids = nil
	}
	sc := &scanner{ids: map[string]object{}}
	for _, pid := range pids {
		p, err := sc.scan(pid)
		if err != nil {
			if r.o.Pid > 0 {
				return err
			}
			continue // exited meanwhile, or not ours to read
		}
		if p.Patched && len(r.revoked) > 0 {
			outs := r.o.undoRevoked(p, r.revoked)
			r.add(outs)
			for _, out := range outs {
				if out.Result != "undone" {
					continue
				}
				for _, t := range r.rec.Targets {
					t.Updates = slices.DeleteFunc(t.Updates, func(id string) bool { return id == out.ID })
				}
			}
		}
		matched, objs := matching(r.src.entries, p)
		if len(matched) == 0 {
			continue
		}
		outs, applied := r.o.upgradeProcess(p, matched, r.src.entries, r.fetch)
		r.add(outs)
		if !r.o.DryRun {
			r.record(pid, objs, applied)
		}
	}
	return nil
}

// record notes the effective version of the target objects of a process.
func (r *run) record(pid int, objs []object, applied []string) {
	for _, ob := range objs {
		t := r.rec.Targets[ob.key()]
		if t == nil {
			t = &TargetRecord{Name: ob.Name, BuildID: ob.BuildID}
			r.rec.Targets[ob.key()] = t
		}
		if t.At != r.now {
			t.Pids = nil
		}
		t.Pids = append(t.Pids, pid)
		t.At = r.now
		t.StreamVersion = r.src.version
		for _, id := range applied {
			if e, ok := r.src.entries[id]; ok && e.Matches(ob.Name, ob.Soname, ob.BuildID) && !slices.Contains(t.Updates, id) {
				t.Updates = append(t.Updates, id)
			}
		}
	}
}

// matching returns the ids of process updates one of p's objects is a
// target of, and those objects.
func matching(entries map[string]Cached, p running) ([]string, []object) {
	var ids []string
	var objs []object
	for _, ob := range p.Objects {
		hit := false
		for id, e := range entries {
			if e.Kind == update.KindProcess && e.Matches(ob.Name, ob.Soname, ob.BuildID) {
				if !slices.Contains(ids, id) {
					ids = append(ids, id)
				}
				hit = true
			}
		}
		if hit {
			objs = append(objs, ob)
		}
	}
	sort.Strings(ids)
	return ids, objs
}

// upgradeProcess applies to one process what it lacks of matched (and of
// what those were built on), in dependency order. A failed update changes
// nothing in the process (apply is all or nothing) and the updates built
// on it are not tried. It returns the outcomes and every id the process
// runs afterwards, in order.
func (o Options) upgradeProcess(p running, matched []string, entries map[string]Cached, fetch func(string) ([]byte, error)) ([]Outcome, []string) {
	tg := process.Target(p.Pid)
	shown, err := tg.Applied()
	if err != nil && procfs.Exiting(p.Pid) {
		return nil, nil // exited since the scan
	}
	if err != nil {
		return []Outcome{{Pid: p.Pid, Comm: p.Comm, ID: strings.Join(matched, ","), Result: "failed", Reason: oneLine(err)}}, nil
	}
	var order []string
	for _, u := range shown {
		if u.Status == state.StatusApplied {
			order = append(order, u.ID)
		}
	}
	t := chainTarget{pid: p.Pid, comm: p.Comm, order: order,
		apply:   func(f *update.File) error { return tg.Apply(f, o.targetOptions()) },
		already: func(err error) bool { return errors.Is(err, process.ErrAlreadyApplied) },
		gone:    func() bool { return procfs.Exiting(p.Pid) }}
	return o.applyChain(t, matched, entries, fetch)
}

// targetOptions are the apply and undo options for internal/target.
func (o Options) targetOptions() target.Options {
	return o.Apply.Options
}

// chainTarget is a process or the kernel, as applyChain sees it.
type chainTarget struct {
	pid     int // 0: the kernel
	comm    string
	order   []string // the updates it runs, oldest first
	apply   func(*update.File) error
	already func(error) bool // the apply error that says another agent got there first
	gone    func() bool      // the process exited (nil: never)
}

// applyChain applies the updates of matched a target lacks, each after
// the updates it requires, all or nothing each; an update whose
// requirement failed is not tried.
func (o Options) applyChain(t chainTarget, matched []string, entries map[string]Cached, fetch func(string) ([]byte, error)) ([]Outcome, []string) {
	out := func(id, result, reason string) Outcome {
		return Outcome{Pid: t.pid, Comm: t.comm, ID: id, Result: result, Reason: reason}
	}
	applied := map[string]bool{}
	for _, id := range t.order {
		applied[id] = true
	}
	order := slices.Clone(t.order)
	plan, bad := ordered(matched, entries, applied)
	var outs []Outcome
	for _, id := range matched {
		if applied[id] {
			outs = append(outs, out(id, "already", ""))
		}
	}
	failed := map[string]bool{}
	for _, b := range bad {
		outs = append(outs, out(b[0], "failed", b[1]))
		failed[b[0]] = true
	}
	for _, id := range plan {
		if i := slices.IndexFunc(entries[id].Requires, func(r string) bool { return failed[r] }); i >= 0 {
			outs = append(outs, out(id, "failed", fmt.Sprintf("requires %s, which failed; nothing changed", entries[id].Requires[i])))
			failed[id] = true
			continue
		}
		if o.DryRun {
			outs = append(outs, out(id, "would apply", ""))
			continue
		}
		data, err := fetch(id)
		var f *update.File
		if err == nil {
			f, err = update.Unmarshal(data)
		}
		if err == nil {
			err = t.apply(f)
		}
		switch {
		case err == nil:
			o.logf("%s %d: applied %s", t.comm, t.pid, id)
			outs = append(outs, out(id, "applied", ""))
			order = append(order, id)
		case t.already(err):
			outs = append(outs, out(id, "already", ""))
			order = append(order, id)
		case t.gone != nil && t.gone():
			return append(outs, out(id, "skipped", "exited")), order
		default:
			outs = append(outs, out(id, "failed", oneLine(err)))
			failed[id] = true
		}
	}
	return outs, order
}

// undoRevoked takes the revoked updates out of a process, newest first, so
// that an update is undone before the ones it was built on.
func (o Options) undoRevoked(p running, revoked map[string]bool) []Outcome {
	tg := process.Target(p.Pid)
	shown, err := tg.Applied()
	if err != nil {
		return nil // not ours to read, or gone: nothing of ours to undo
	}
	var outs []Outcome
	for i := len(shown) - 1; i >= 0; i-- {
		id := shown[i].ID
		if !revoked[id] {
			continue
		}
		out := Outcome{Pid: p.Pid, Comm: p.Comm, ID: id, Result: "undone"}
		if o.DryRun {
			out.Result = "would undo"
		} else if err := tg.Undo(id, o.targetOptions()); err != nil {
			out.Result, out.Reason = "failed", "undo of a revoked update: "+oneLine(err)
		} else {
			o.logf("pid %d: undid revoked %s", p.Pid, id)
		}
		outs = append(outs, out)
	}
	return outs
}

// ordered returns the updates to apply for matched, with the updates they
// require first (a required update is applied before the ones built on
// it, whether or not it matched by itself), ties by id; and the updates
// that cannot be applied with the reason.
func ordered(matched []string, entries map[string]Cached, applied map[string]bool) ([]string, [][2]string) {
	need := map[string]bool{}
	var bad [][2]string
	var visit func(id string, path []string) bool
	visit = func(id string, path []string) bool {
		if applied[id] || need[id] {
			return true
		}
		refuse := func(reason string) bool {
			for _, p := range path {
				if !slices.ContainsFunc(bad, func(b [2]string) bool { return b[0] == p }) {
					bad = append(bad, [2]string{p, reason})
				}
			}
			return false
		}
		if slices.Contains(path, id) {
			return refuse("requires form a cycle: " + strings.Join(append(path, id), " -> "))
		}
		e, ok := entries[id]
		if !ok {
			return refuse(fmt.Sprintf("requires %s, which is neither applied nor in the stream; nothing changed", id))
		}
		for _, r := range e.Requires {
			if !visit(r, append(slices.Clone(path), id)) {
				return false
			}
		}
		need[id] = true
		return true
	}
	for _, id := range matched {
		visit(id, nil)
	}
	// Kahn's algorithm over need, smallest id first among the ready ones.
	var plan []string
	done := map[string]bool{}
	for len(plan) < len(need) {
		var ready []string
		for id := range need {
			if done[id] {
				continue
			}
			ok := true
			for _, r := range entries[id].Requires {
				ok = ok && (applied[r] || done[r])
			}
			if ok {
				ready = append(ready, id)
			}
		}
		if len(ready) == 0 {
			break // unreachable: visit refused cycles
		}
		sort.Strings(ready)
		done[ready[0]] = true
		plan = append(plan, ready[0])
	}
	return plan, bad
}

func sortedCopy(ids []string) []string {
	out := slices.Clone(ids)
	sort.Strings(out)
	return out
}

func joinSorted(ids []string) string { return strings.Join(sortedCopy(ids), ",") }

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }
