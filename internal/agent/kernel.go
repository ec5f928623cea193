package agent

import (
	"errors"

	"livesplice/internal/kernel"
	"livesplice/internal/target"
	"livesplice/internal/update"
)

// kernelTarget is the running kernel as the agent uses it: the target
// contract (apply, undo, what is applied) and the release it runs.
// internal/kernel on the machine, a fake in tests.
type kernelTarget interface {
	target.Target
	Release() (string, error)
}

type systemKernel struct{ target.Target }

func (systemKernel) Release() (string, error) { return kernel.Release() }

var runningKernel kernelTarget = systemKernel{kernel.Target()}

// kernelRunning lists the ids of the updates the kernel runs (enabled, or in the
// transition to it), oldest first.
func kernelRunning(k target.Target) ([]string, error) {
	shown, err := k.Applied()
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, u := range shown {
		if u.Status == "enabled" || u.Status == "transition" {
			ids = append(ids, u.ID)
		}
	}
	return ids, nil
}

// forKernel reports whether an entry is a kernel update for release.
func forKernel(c Cached, release string) bool {
	return c.Kind == update.KindKernel && release != "" && c.Release == release
}

// upgradeKernel first undoes the revoked updates the running kernel runs
// (newest first, so an update goes before the ones it was built on), then
// applies the updates of the stream built for its release that it lacks,
// in order. It returns the outcomes and the ids the kernel runs afterwards.
func (o Options) upgradeKernel(release string, entries map[string]Cached, revoked map[string]bool, fetch func(string) ([]byte, error)) ([]Outcome, []string) {
	var matched []string
	for id, c := range entries {
		if forKernel(c, release) {
			matched = append(matched, id)
		}
	}
	order, err := kernelRunning(runningKernel)
	if err != nil {
		if len(matched) == 0 {
			return nil, nil
		}
		return []Outcome{{Comm: "kernel", ID: joinSorted(matched), Result: "failed", Reason: oneLine(err)}}, nil
	}
	var outs []Outcome
	for i := len(order) - 1; i >= 0; i-- {
		id := order[i]
		if !revoked[id] {
			continue
		}
		out := Outcome{Comm: "kernel", ID: id, Result: "undone"}
		if o.DryRun {
			out.Result = "would undo"
		} else if err := runningKernel.Undo(id, o.kernelOptions()); err != nil {
			out.Result, out.Reason = "failed", "undo of a revoked update: "+oneLine(err)
		} else {
			o.logf("kernel: undid revoked %s", id)
		}
		if out.Result == "undone" {
			order = append(order[:i:i], order[i+1:]...)
		}
		outs = append(outs, out)
	}
	if len(matched) == 0 {
		return outs, order
	}
	t := chainTarget{comm: "kernel", order: order,
		apply:   func(f *update.File) error { return runningKernel.Apply(f, o.kernelOptions()) },
		already: func(err error) bool { return errors.Is(err, target.ErrApplied) }}
	more, order := o.applyChain(t, sortedCopy(matched), entries, fetch)
	return append(outs, more...), order
}

// kernelOptions are the apply and undo options for the kernel: progress
// goes to the agent's log.
func (o Options) kernelOptions() target.Options {
	return target.Options{Deadline: o.Apply.Deadline, Log: o.Log}
}
