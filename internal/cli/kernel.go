package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"livesplice/internal/kernel"
)

// The --kernel forms of apply, undo and show: the running kernel is the
// target, through internal/kernel.

// KernelShowJSON is the stable --json output of show --kernel.
type KernelShowJSON struct {
	Release string         `json:"release"`
	Updates []kernel.Shown `json:"updates"`
}

func showKernel(pid int, all, asJSON bool, stdout io.Writer) error {
	if pid > 0 || all {
		return usageError{errors.New("show: --kernel takes neither --pid nor --all")}
	}
	shown, err := kernel.System.Show()
	if err != nil {
		return err
	}
	if asJSON {
		rel, _ := kernel.Release()
		return writeJSON(stdout, KernelShowJSON{Release: rel, Updates: shown})
	}
	for _, u := range shown {
		names := make([]string, 0, len(u.Funcs))
		for _, f := range u.Funcs {
			n := f.Name
			if f.Object != "vmlinux" {
				n = f.Object + ":" + n
			}
			names = append(names, n)
		}
		fmt.Fprintf(stdout, "%s\t%s\t%s\t%s\t%s\n", u.ID, u.State, u.Module, u.AppliedAt, strings.Join(names, ","))
	}
	return nil
}
