package kernel

import (
	"livesplice/internal/target"
	"livesplice/internal/update"
)

// Target is the running kernel of this machine as a target.Target.
func Target() target.Target { return System.Target() }

// Target is the kernel h describes as a target.Target.
func (h *Host) Target() target.Target { return hostTarget{h} }

type hostTarget struct{ h *Host }

func (k hostTarget) String() string { return "the kernel" }
func (k hostTarget) Kind() string   { return update.KindKernel }

func (k hostTarget) Apply(f *update.File, o target.Options) error {
	return k.h.Apply(f, o)
}

func (k hostTarget) Undo(id string, o target.Options) error { return k.h.Undo(id, o) }

// Applied lists livesplice's loaded updates; Status is livepatch's state
// ("enabled", "transition", "disabled", "unloaded").
func (k hostTarget) Applied() ([]target.Applied, error) {
	shown, err := k.h.Show()
	if err != nil {
		return nil, err
	}
	out := []target.Applied{}
	for _, u := range shown {
		a := target.Applied{ID: u.ID, Status: u.State, Functions: []string{}}
		for _, f := range u.Funcs {
			n := f.Name
			if f.Object != "vmlinux" {
				n = f.Object + ":" + n
			}
			a.Functions = append(a.Functions, n)
		}
		out = append(out, a)
	}
	return out, nil
}
