package target_test

import (
	"errors"
	"testing"

	"livesplice/internal/kernel"
	"livesplice/internal/process"
	"livesplice/internal/target"
	"livesplice/internal/update"
)

// Each backend refuses the other kind's update before touching anything
// (the process here is PID 1: nothing may attach to it), with the one
// error kind the command line maps.
func TestKindMismatch(t *testing.T) {
	kern := &update.File{ID: "k", Kind: update.KindKernel}
	proc := &update.File{ID: "p", Kind: update.KindProcess}
	for _, c := range []struct {
		t target.Target
		f *update.File
	}{{process.Target(1), kern}, {kernel.Target(), proc}} {
		err := c.t.Apply(c.f, target.Options{})
		var km *target.KindMismatch
		if !errors.As(err, &km) || km.Target != c.t.String() || !errors.Is(err, target.ErrWrongKind) {
			t.Errorf("%s.Apply(%s update) = %v, want a kind mismatch", c.t, c.f.Kind, err)
		}
	}
	if process.Target(42).String() != "process 42" || process.Target(42).Kind() != update.KindProcess || kernel.Target().Kind() != update.KindKernel {
		t.Error("names or kinds wrong")
	}
}

// A backend's own wording is one of the target's kinds, and only that one.
func TestMark(t *testing.T) {
	kinds := []error{target.ErrWrongKind, target.ErrMismatch, target.ErrBusy, target.ErrApplied, target.ErrNotApplied,
		target.ErrDependent, target.ErrPermission, target.ErrHook}
	for _, c := range []struct {
		err  error
		kind error
	}{
		{process.ErrBusy, target.ErrBusy}, {kernel.ErrBusy, target.ErrBusy}, {process.ErrLocked, target.ErrBusy},
		{process.ErrNotMapped, target.ErrMismatch}, {kernel.ErrWrongKernel, target.ErrMismatch},
		{process.ErrHook, target.ErrHook}, {kernel.ErrVetoed, target.ErrHook},
		{kernel.ErrNotRoot, target.ErrPermission}, {process.ErrNotPermitted, target.ErrPermission},
		{kernel.ErrDependent, target.ErrDependent}, {process.ErrAlreadyApplied, target.ErrApplied},
	} {
		for _, k := range kinds {
			if got := errors.Is(c.err, k); got != (k == c.kind) {
				t.Errorf("errors.Is(%q, %q) = %v", c.err, k, got)
			}
		}
	}
	if process.ErrBusy.Error() != "function busy" || kernel.ErrBusy.Error() != "livepatch transition did not finish" {
		t.Error("a backend's wording changed")
	}
}
