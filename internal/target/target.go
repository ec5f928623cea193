// Package target is the contract livesplice's backends implement: a running
// process (internal/process: ptrace, gate stubs, an in-process record) and
// the running Linux kernel (internal/kernel: run-pre against /proc/kcore, a
// livepatch module). Like delve's proc.Target over its native and core
// backends, it lets the command line and the stream's agent apply, undo and
// list updates without knowing which kind of target they talk to.
//
// The package is a leaf: it imports only the update file's types. It owns
// the options every backend takes, the record of an applied update, and the
// errors the callers tell apart (defined once here, as cilium/ebpf defines
// ErrNotSupported once); each backend words its own refusals and marks them
// with one of these kinds (Mark), so errors.Is(err, target.ErrBusy) holds
// for a process's busy function and for a kernel's unfinished transition.
// What only one backend has (apply --all over processes, watch, the
// kernel's transition state) stays in that backend's package.
package target

import (
	"errors"
	"fmt"
	"io"
	"time"

	"livesplice/internal/update"
)

// Options tune apply and undo on any target; a backend ignores what it
// has no use for.
type Options struct {
	// Deadline bounds the wait for busy functions (process) or for the
	// livepatch transition (kernel); 0: the backend's default.
	Deadline time.Duration
	// HookTimeout bounds each custom-code hook in a process; 0: the default.
	HookTimeout time.Duration
	// Log receives progress lines (nil: quiet).
	Log io.Writer
}

// DeadlineOr is the deadline, or def when none was set.
func (o Options) DeadlineOr(def time.Duration) time.Duration {
	if o.Deadline <= 0 {
		return def
	}
	return o.Deadline
}

// Logf writes one progress line to Log, if any.
func (o Options) Logf(format string, a ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", a...)
	}
}

// Applied is one update applied to a target, as every backend can say it.
type Applied struct {
	ID string `json:"id"`
	// Status is the backend's word: "applied" (process), "enabled",
	// "transition", "disabled" (kernel), ...
	Status    string   `json:"status"`
	Functions []string `json:"functions"`
}

// Target is something livesplice splices updates into.
type Target interface {
	// String names the target for messages: "process 1234", "the kernel".
	String() string
	// Kind is the update kind the target takes (update.KindProcess, ...).
	Kind() string
	// Apply applies f whole or not at all. An update of another kind is
	// refused before anything is touched (ErrWrongKind).
	Apply(f *update.File, o Options) error
	// Undo takes the update id out again.
	Undo(id string, o Options) error
	// Applied lists the applied updates, oldest first.
	Applied() ([]Applied, error)
}

// The kinds of refusal callers tell apart (the command line maps each to
// its exit code). Backends return their own wording marked with one of
// these (Mark), or wrap them.
var (
	// ErrWrongKind: an update of another kind (a kernel update for a process).
	ErrWrongKind = errors.New("update of another kind")
	// ErrMismatch: the target is not what the update was built for (run-pre
	// matching failed, the object is not mapped, another kernel release).
	ErrMismatch = errors.New("the target is not what the update was built for")
	// ErrBusy: a function to replace stayed in use, the transition did not
	// finish, or another livesplice holds the target.
	ErrBusy = errors.New("busy")
	// ErrApplied: the update is applied already.
	ErrApplied = errors.New("update already applied")
	// ErrNotApplied: undo of an update the target does not have.
	ErrNotApplied = errors.New("update not applied")
	// ErrDependent: undo of an update a later one was built on.
	ErrDependent = errors.New("a later update depends on it")
	// ErrPermission: the caller may not patch this target (ptrace refused,
	// not root, the kernel refused the module).
	ErrPermission = errors.New("not permitted")
	// ErrHook: the update's custom code vetoed or failed.
	ErrHook = errors.New("the update's custom code vetoed or failed")
)

// Mark returns an error whose text is text and that errors.Is kind: a
// backend's own words for one of the kinds above.
func Mark(kind error, text string) error { return &marked{kind, text} }

type marked struct {
	kind error
	text string
}

func (m *marked) Error() string        { return m.text }
func (m *marked) Is(target error) bool { return target == m.kind }

// KindMismatch is the refusal of an update of another kind.
type KindMismatch struct{ ID, Kind, Target string }

func (e *KindMismatch) Error() string {
	return fmt.Sprintf("update %s is a %s update, not for %s", e.ID, e.Kind, e.Target)
}

// Is makes a KindMismatch an ErrWrongKind.
func (e *KindMismatch) Is(target error) bool { return target == ErrWrongKind }

// CheckKind refuses f unless t takes updates of f's kind; every backend
// calls it first in Apply.
func CheckKind(t Target, f *update.File) error {
	if f.Kind != t.Kind() {
		return &KindMismatch{f.ID, f.Kind, t.String()}
	}
	return nil
}
