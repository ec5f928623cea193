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
	"livesplice/internal/state"
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
	Result string `json:"result"` // "applied", "already", "would apply", "undone", "would undo", "failed"
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
		sum += fmt.Sprintf(", unverified %d", len(r.Unfetched))
	}
	return sum, n["failed"] + len(r.Unfetched)
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
	src := source{version: rec.Stream.Version, entries: rec.Updates, files: sd.cachedFile}
	// Revoked: updates this agent took from the stream before that the
	// stream no longer lists. They are undone where they run.
	revoked := map[string]bool{}
	for _, id := range rec.Revoked {
		revoked[id] = true
	}
	var stream *Stream
	if !o.Offline {
		c := &client{url: o.Repo, trust: o.Trust, state: sd, retries: o.Retries, wait: o.RetryWait}
		if c.retries == 0 {
			c.retries = 3
		}
		if c.wait == 0 {
			c.wait = time.Second
		}
		if stream, err = c.refresh(); err != nil {
			return nil, err
		}
		o.logf("stream %s: version %d, %d updates", o.Repo, stream.Version, len(stream.Updates))
		src = source{version: stream.Version, entries: map[string]Cached{}}
		for _, a := range stream.Updates {
			src.entries[a.ID] = Cached{Entry: a.Entry, Length: a.Length, SHA256: a.SHA256}
		}
		for id := range rec.Updates {
			if _, ok := src.entries[id]; !ok {
				revoked[id] = true
			}
		}
		for id := range revoked {
			if _, ok := src.entries[id]; ok {
				delete(revoked, id) // published again
			}
		}
		rec.Revoked = rec.Revoked[:0]
		for id := range revoked {
			rec.Revoked = append(rec.Revoked, id)
		}
		sort.Strings(rec.Revoked)
		byID := map[string]Available{}
		for _, a := range stream.Updates {
			byID[a.ID] = a
		}
		src.files = func(c Cached) ([]byte, error) { return stream.download(byID[c.ID]) }
		rec.Stream.URL, rec.Stream.Version = o.Repo, stream.Version
		rec.Stream.Checked = time.Now().UTC().Format(time.RFC3339)
	}
	rep := &Report{StreamVersion: src.version, Outcomes: []Outcome{}, Updates: []Cached{}}
	for _, c := range src.entries {
		rep.Updates = append(rep.Updates, c)
	}
	sort.Slice(rep.Updates, func(i, j int) bool { return rep.Updates[i].ID < rep.Updates[j].ID })

	// The verified cache: an online run keeps every process update of the
	// stream (so that --init can apply it to a process started later) and
	// drops what the stream no longer has.
	files := map[string][]byte{}
	fileErr := map[string]error{}
	fetch := func(id string) ([]byte, error) {
		if d, ok := files[id]; ok {
			return d, nil
		}
		if err := fileErr[id]; err != nil {
			return nil, err
		}
		c, ok := src.entries[id]
		if !ok {
			return nil, fmt.Errorf("update %s is not in the stream", id)
		}
		d, err := src.files(c)
		if err != nil {
			fileErr[id] = err
			return nil, err
		}
		files[id] = d
		return d, nil
	}
	release, _ := runningKernel.Release()
	if !o.Offline && !o.DryRun {
		for id, c := range src.entries {
			if c.Kind != update.KindProcess && !forKernel(c, release) {
				continue
			}
			if _, err := fetch(id); err != nil {
				if rep.Unfetched == nil {
					rep.Unfetched = map[string]string{}
				}
				rep.Unfetched[id] = oneLine(err)
				rep.verifyFailed = rep.verifyFailed || errors.Is(err, ErrVerify)
				continue
			}
			rec.Updates[id] = c
		}
		for id := range rec.Updates {
			if _, ok := src.entries[id]; !ok {
				delete(rec.Updates, id)
			}
		}
	}
	for id := range rec.Updates {
		rep.Cached = append(rep.Cached, id)
	}
	sort.Strings(rep.Cached)
	if o.FetchOnly {
		return rep, sd.write(rec)
	}

	pids := allPids()
	if o.Pid > 0 {
		pids = []int{o.Pid}
	}
	if o.NoProcesses {
		pids = nil
	}
	sc := &scanner{ids: map[string]object{}}
	now := time.Now().UTC().Format(time.RFC3339)
	for _, pid := range pids {
		p, err := sc.scan(pid)
		if err != nil {
			if o.Pid > 0 {
				return nil, err
			}
			continue // exited meanwhile, or not ours to read
		}
		if p.Patched && len(revoked) > 0 {
			outs := o.undoRevoked(p, revoked)
			rep.Outcomes = append(rep.Outcomes, outs...)
			for _, out := range outs {
				if out.Result != "undone" {
					continue
				}
				for _, t := range rec.Targets {
					t.Updates = slices.DeleteFunc(t.Updates, func(id string) bool { return id == out.ID })
				}
			}
		}
		matched, objs := matching(src.entries, p)
		if len(matched) == 0 {
			continue
		}
		outs, applied := o.upgradeProcess(p, matched, src.entries, fetch)
		for _, out := range outs {
			if out.Result == "failed" && errors.Is(fileErr[out.ID], ErrVerify) {
				rep.verifyFailed = true
			}
		}
		rep.Outcomes = append(rep.Outcomes, outs...)
		if o.DryRun {
			continue
		}
		for _, ob := range objs {
			t := rec.Targets[ob.key()]
			if t == nil {
				t = &TargetRecord{Name: ob.Name, BuildID: ob.BuildID}
				rec.Targets[ob.key()] = t
			}
			if t.At != now {
				t.Pids = nil
			}
			t.Pids = append(t.Pids, pid)
			t.At = now
			t.StreamVersion = src.version
			for _, id := range applied {
				if e, ok := src.entries[id]; ok && e.Matches(ob.Name, ob.Soname, ob.BuildID) && !slices.Contains(t.Updates, id) {
					t.Updates = append(t.Updates, id)
				}
			}
		}
	}
	if o.Kernel {
		outs, order := o.upgradeKernel(release, src.entries, fetch)
		for _, out := range outs {
			if out.Result == "failed" && errors.Is(fileErr[out.ID], ErrVerify) {
				rep.verifyFailed = true
			}
		}
		rep.Outcomes = append(rep.Outcomes, outs...)
		if outs != nil && !o.DryRun {
			rec.Targets["kernel@"+release] = &TargetRecord{Name: "kernel", BuildID: release, Updates: order, StreamVersion: src.version, At: now}
		}
	}
	if o.DryRun {
		return rep, nil
	}
	if err := sd.write(rec); err != nil {
		return rep, err
	}
	if o.Report && !o.Offline {
		if err := postReport(o, rec, rep); err != nil {
			rep.ReportError = oneLine(err)
		}
	}
	return rep, nil
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
	shown, err := process.Show(p.Pid)
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
		apply:   func(f *update.File) error { return process.Apply(p.Pid, f, o.Apply) },
		already: func(err error) bool { return errors.Is(err, process.ErrAlreadyApplied) }}
	return o.applyChain(t, matched, entries, fetch)
}

// chainTarget is a process or the kernel, as applyChain sees it.
type chainTarget struct {
	pid     int // 0: the kernel
	comm    string
	order   []string // the updates it runs, oldest first
	apply   func(*update.File) error
	already func(error) bool // the apply error that says another agent got there first
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
	shown, err := process.Show(p.Pid)
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
		} else if err := process.Undo(p.Pid, id, o.Apply); err != nil {
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
