package cli

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"livesplice/internal/agent"
)

func TestExitCodeVerify(t *testing.T) {
	err := fmt.Errorf("update stream http://x: %w: expired metadata", agent.ErrVerify)
	if got := ExitCode(err); got != ExitVerify {
		t.Fatalf("exit code %d for a verification failure", got)
	}
}

func TestUpgradeCommandLine(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		exit int
		want string
	}{
		{[]string{"upgrade", "--config", "/dev/null", "--state", dir}, ExitUsage, "no update stream"},
		{[]string{"upgrade", "--pid", "5", "--all", "--repo", "http://x"}, ExitUsage, "not both"},
		{[]string{"upgrade", "--config", filepath.Join(dir, "none.conf")}, ExitError, "none.conf"},
		{[]string{"upgrade", "--config", "/dev/null", "--repo", "http://127.0.0.1:1", "--trust", filepath.Join(dir, "none.json"), "--state", dir}, ExitError, "trusted root"},
		{[]string{"repo", "add", dir}, ExitUsage, "at least one update FILE"},
		{[]string{"repo", "rotate-key", dir, "root"}, ExitError, "repo init"},
	} {
		var out, errb bytes.Buffer
		code := Main(c.args, &out, &errb)
		if code != c.exit || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%v: exit %d %q, want exit %d and %q", c.args, code, errb.String(), c.exit, c.want)
		}
	}
}
