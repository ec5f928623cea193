package process

import (
	"strconv"

	"livesplice/internal/target"
	"livesplice/internal/update"
)

// Target is the running process pid as a target.Target.
func Target(pid int) target.Target { return proc(pid) }

type proc int

func (p proc) String() string { return "process " + strconv.Itoa(int(p)) }
func (p proc) Kind() string   { return update.KindProcess }

func (p proc) Apply(f *update.File, o target.Options) error {
	return Apply(int(p), f, Options{Options: o})
}

func (p proc) Undo(id string, o target.Options) error {
	return Undo(int(p), id, Options{Options: o})
}

// Applied lists the record's updates; Status is "applied" or, for an update
// an interrupted command left behind, what its commit flag says.
func (p proc) Applied() ([]target.Applied, error) {
	shown, err := Show(int(p))
	if err != nil {
		return nil, err
	}
	out := []target.Applied{}
	for _, u := range shown {
		a := target.Applied{ID: u.ID, Status: u.Status, Functions: []string{}}
		for _, f := range u.Funcs {
			a.Functions = append(a.Functions, f.Name)
		}
		out = append(out, a)
	}
	return out, nil
}
