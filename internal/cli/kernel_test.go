package cli

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"livesplice/internal/kernel"
)

func TestKernelExitCodes(t *testing.T) {
	for err, want := range map[error]int{
		kernel.ErrWrongKernel: ExitMismatch,
		kernel.ErrBusy:        ExitBusy,
		kernel.ErrApplied:     ExitState,
		kernel.ErrNotApplied:  ExitState,
		kernel.ErrDependent:   ExitState,
		kernel.ErrNotRoot:     ExitPermission,
		kernel.ErrRejected:    ExitPermission,
	} {
		if got := ExitCode(fmt.Errorf("update x: %w", err)); got != want {
			t.Errorf("ExitCode(%v) = %d, want %d", err, got, want)
		}
	}
}

func TestKernelUsage(t *testing.T) {
	for _, args := range [][]string{
		{"apply", "--kernel", "--pid", "5", "x.lsu"},
		{"undo", "--kernel", "--all", "x"},
		{"show", "--kernel", "--pid", "5"},
	} {
		var out, errb bytes.Buffer
		if code := Main(args, &out, &errb); code != ExitUsage || !(strings.Contains(errb.String(), "--kernel takes neither") || strings.Contains(errb.String(), "give one of --pid PID, --all or --kernel")) {
			t.Errorf("%v: exit %d, %q", args, code, errb.String())
		}
	}
}
