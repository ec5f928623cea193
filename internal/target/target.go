// Package target puts livesplice's two backends behind one interface: a
// running process (internal/process: ptrace, gate stubs, an in-process
// record) and the running Linux kernel (internal/kernel: run-pre against
// /proc/kcore, a livepatch module). Like delve's proc layer over its native
// and core backends, it lets the command line apply, undo and list updates
// without knowing which kind of target it talks to. What only one backend
// has (apply --all over processes, the kernel's transition state) stays in
// that backend's package.
package target

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"livesplice/internal/kernel"
	"livesplice/internal/process"
	"livesplice/internal/update"
)

// Options tune apply and undo on any target; a backend ignores what it
// has no use for.
type Options struct {
	Deadline    time.Duration // busy functions (process) or the transition (kernel); 0: the backend's default
	HookTimeout time.Duration // each custom-code hook in a process; 0: the default
	Log         io.Writer     // progress, when non-nil
}

// Applied is one update applied to a target, as every backend can say it.
type Applied struct {
	ID        string   `json:"id"`
	Status    string   `json:"status"` // the backend's word: "applied", "enabled", "transition", ...
	Functions []string `json:"functions"`
}

// Target is something livesplice splices updates into.
type Target interface {
	// String names the target for messages: "process 1234", "the kernel".
	String() string
	// Kind is the update kind the target takes (update.KindProcess, ...).
	Kind() string
	// Apply applies f whole or not at all.
	Apply(f *update.File, o Options) error
	// Undo takes the update id out again.
	Undo(id string, o Options) error
	// Applied lists the applied updates, oldest first.
	Applied() ([]Applied, error)
}

// Process is the running process pid.
func Process(pid int) Target { return proc(pid) }

// Kernel is the running kernel of this machine.
func Kernel() Target { return kern{&kernel.System} }

// KindMismatch is the refusal of an update of another kind.
type KindMismatch struct{ ID, Kind, Target string }

func (e *KindMismatch) Error() string {
	return fmt.Sprintf("update %s is a %s update, not for %s", e.ID, e.Kind, e.Target)
}

func checkKind(t Target, f *update.File) error {
	if f.Kind != t.Kind() {
		return &KindMismatch{f.ID, f.Kind, t.String()}
	}
	return nil
}

type proc int

func (p proc) String() string { return "process " + strconv.Itoa(int(p)) }
func (p proc) Kind() string   { return update.KindProcess }

func (p proc) options(o Options) process.Options {
	return process.Options{Deadline: o.Deadline, HookTimeout: o.HookTimeout, Log: o.Log}
}

func (p proc) Apply(f *update.File, o Options) error {
	if err := checkKind(p, f); err != nil {
		return err
	}
	return process.Apply(int(p), f, p.options(o))
}

func (p proc) Undo(id string, o Options) error { return process.Undo(int(p), id, p.options(o)) }

func (p proc) Applied() ([]Applied, error) {
	shown, err := process.Show(int(p))
	if err != nil {
		return nil, err
	}
	out := []Applied{}
	for _, u := range shown {
		a := Applied{ID: u.ID, Status: u.Status, Functions: []string{}}
		for _, f := range u.Funcs {
			a.Functions = append(a.Functions, f.Name)
		}
		out = append(out, a)
	}
	return out, nil
}

type kern struct{ h *kernel.Host }

func (k kern) String() string { return "the kernel" }
func (k kern) Kind() string   { return update.KindKernel }

func (k kern) Apply(f *update.File, o Options) error {
	if err := checkKind(k, f); err != nil {
		return err
	}
	return k.h.Apply(f, kernel.Options{Deadline: o.Deadline, Log: o.Log})
}

func (k kern) Undo(id string, o Options) error {
	return k.h.Undo(id, kernel.Options{Deadline: o.Deadline, Log: o.Log})
}

func (k kern) Applied() ([]Applied, error) {
	shown, err := k.h.Show()
	if err != nil {
		return nil, err
	}
	out := []Applied{}
	for _, u := range shown {
		a := Applied{ID: u.ID, Status: u.State, Functions: []string{}}
		for _, f := range u.Funcs {
			a.Functions = append(a.Functions, f.Name)
		}
		out = append(out, a)
	}
	return out, nil
}
