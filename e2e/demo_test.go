package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// README's first command: the built-in example end to end.
func TestDemo(t *testing.T) {
	slow(t)
	out, err := exec.Command("../scripts/demo.sh").CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	s := string(out)
	apply := strings.Index(s, "== 3. apply")
	undo := strings.Index(s, "== 4. undo")
	if apply < 0 || undo < apply {
		t.Fatalf("demo output lacks its steps:\n%s", s)
	}
	if !strings.Contains(s[:apply], "= 120") || !strings.Contains(s[apply:undo], "= 108") || !strings.Contains(s[undo:], "= 120") {
		t.Fatalf("demo did not show the fix applied live and undone:\n%s", s)
	}
}
