package cli

import (
	"bytes"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"livesplice/internal/agent"
	"livesplice/internal/repo"
	"livesplice/internal/server"
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

// The switches of the configuration file, as the systemd units use them.
func TestScheduledSwitches(t *testing.T) {
	dir := t.TempDir()
	r := filepath.Join(dir, "repo")
	if err := repo.Init(r, repo.Options{}); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(server.Handler(r))
	defer ts.Close()
	conf := filepath.Join(dir, "livesplice.conf")
	state := filepath.Join(dir, "state")
	os.WriteFile(conf, []byte("repo = "+ts.URL+"\ntrust = "+filepath.Join(r, repo.RootFile)+"\nstate = "+state+"\nauto_install = no\ninstall_on_reboot = no\n"), 0o644)
	var out, errb bytes.Buffer
	if code := Main([]string{"upgrade", "--init", "--scheduled", "--config", conf}, &out, &errb); code != 0 || out.Len()+errb.Len() != 0 {
		t.Fatalf("--init with install_on_reboot = no: exit %d %q %q", code, out.String(), errb.String())
	}
	if _, err := os.Stat(state); err == nil {
		t.Fatal("--init with install_on_reboot = no touched the state directory")
	}
	if code := Main([]string{"upgrade", "--scheduled", "--config", conf}, &out, &errb); code != 0 || out.String() != "stream version 1: 0 updates verified and cached (auto_install is off)\n" {
		t.Fatalf("scheduled with auto_install = no: exit %d %q %q", code, out.String(), errb.String())
	}
}
