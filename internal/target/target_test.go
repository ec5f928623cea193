package target

import (
	"errors"
	"testing"

	"livesplice/internal/update"
)

// Each target refuses the other kind's update before touching anything
// (the process here is PID 1: nothing may attach to it).
func TestKindMismatch(t *testing.T) {
	kern := &update.File{ID: "k", Kind: update.KindKernel}
	proc := &update.File{ID: "p", Kind: update.KindProcess}
	for _, c := range []struct {
		t Target
		f *update.File
	}{{Process(1), kern}, {Kernel(), proc}} {
		err := c.t.Apply(c.f, Options{})
		var km *KindMismatch
		if !errors.As(err, &km) || km.Target != c.t.String() {
			t.Errorf("%s.Apply(%s update) = %v, want a kind mismatch", c.t, c.f.Kind, err)
		}
	}
	if Process(42).String() != "process 42" || Process(42).Kind() != update.KindProcess || Kernel().Kind() != update.KindKernel {
		t.Error("names or kinds wrong")
	}
}
