package agent

import (
	"errors"

	"livesplice/internal/kernel"
	"livesplice/internal/target"
	"livesplice/internal/update"
)

// kernelTarget is the running kernel as the agent uses it: internal/kernel
// on the machine, a fake in tests.
type kernelTarget interface {
	Release() (string, error)
	Applied() ([]string, error) // ids of the enabled updates, oldest first
	Apply(f *update.File, o kernel.Options) error
}

type systemKernel struct{}

func (systemKernel) Release() (string, error) { return kernel.Release() }

func (systemKernel) Applied() ([]string, error) {
	shown, err := kernel.System.Show()
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, u := range shown {
		if u.Enabled {
			ids = append(ids, u.ID)
		}
	}
	return ids, nil
}

func (systemKernel) Apply(f *update.File, o kernel.Options) error {
	return target.Kernel().Apply(f, target.Options{Deadline: o.Deadline, Log: o.Log})
}

var runningKernel kernelTarget = systemKernel{}

// forKernel reports whether an entry is a kernel update for release.
func forKernel(c Cached, release string) bool {
	return c.Kind == update.KindKernel && release != "" && c.Release == release
}

// upgradeKernel applies to the running kernel the updates of the stream
// built for its release that it lacks, in order. It returns the outcomes
// and the ids the kernel runs afterwards.
func (o Options) upgradeKernel(release string, entries map[string]Cached, fetch func(string) ([]byte, error)) ([]Outcome, []string) {
	var matched []string
	for id, c := range entries {
		if forKernel(c, release) {
			matched = append(matched, id)
		}
	}
	if len(matched) == 0 {
		return nil, nil
	}
	order, err := runningKernel.Applied()
	if err != nil {
		return []Outcome{{Comm: "kernel", ID: joinSorted(matched), Result: "failed", Reason: oneLine(err)}}, nil
	}
	t := chainTarget{comm: "kernel", order: order,
		apply: func(f *update.File) error {
			return runningKernel.Apply(f, kernel.Options{Deadline: o.Apply.Deadline, Log: o.Log})
		},
		already: func(err error) bool { return errors.Is(err, kernel.ErrApplied) }}
	return o.applyChain(t, sortedCopy(matched), entries, fetch)
}
