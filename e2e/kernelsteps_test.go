package e2e

import (
	"strings"
	"testing"

	"livesplice/e2e/kernellab"
)

// stepWant is what a VM step of a kernel test must show: its exit code,
// and text its output contains ("": the step prints nothing).
type stepWant struct {
	step string
	rc   int
	out  string
}

// checkSteps checks the steps a VM ran against wants, in order.
func checkSteps(t *testing.T, steps map[string]kernellab.Step, wants []stepWant) {
	t.Helper()
	for _, c := range wants {
		s, ok := steps[c.step]
		switch {
		case !ok:
			t.Errorf("step %s did not run", c.step)
		case s.RC != c.rc:
			t.Errorf("step %s: exit %d, want %d; output:\n%s", c.step, s.RC, c.rc, s.Out)
		case c.out != "" && !strings.Contains(s.Out, c.out):
			t.Errorf("step %s: output %q does not contain %q", c.step, s.Out, c.out)
		case c.out == "" && strings.TrimSpace(s.Out) != "":
			t.Errorf("step %s: unexpected output %q", c.step, s.Out)
		}
	}
}

// expectStep checks one step's exit code and that its output contains
// out (any output when out is "").
func expectStep(t *testing.T, steps map[string]kernellab.Step, name string, rc int, out string) {
	t.Helper()
	s, ok := steps[name]
	if !ok {
		t.Errorf("step %s did not run", name)
		return
	}
	if s.RC != rc || !strings.Contains(s.Out, out) {
		t.Errorf("step %s: exit %d, want %d with %q; output:\n%s", name, s.RC, rc, out, s.Out)
	}
}
