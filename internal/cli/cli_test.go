package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestUsageAndBadFiles(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.lsu")
	os.WriteFile(bad, []byte("garbage\n"), 0o644)
	cases := []struct {
		args []string
		exit int
		msg  string
	}{
		{[]string{"bogus"}, ExitUsage, "unknown command"},
		{[]string{"apply", "x.lsu"}, ExitUsage, "give one of --pid PID, --all or --kernel"},
		{[]string{"apply", "--pid", "5", "--all", "x.lsu"}, ExitUsage, "give one of --pid PID, --all or --kernel"},
		{[]string{"apply", "--pid", "x", "f"}, ExitUsage, "invalid argument"},
		{[]string{"undo", "--pid", "1"}, ExitUsage, "expected one update ID"},
		{[]string{"create", "-o", "x", "p.patch"}, ExitUsage, "--src DIR and -o FILE are required"},
		{[]string{"create", "--kernel", "--src", "s", "-o", "x", "p.patch"}, ExitUsage, "--kernel needs --config CONFIG"},
		{[]string{"create", "--src", "s", "--config", "c", "-o", "x", "p.patch"}, ExitUsage, "--kernel needs --config CONFIG"},
		{[]string{"info", bad}, ExitError, "corrupt update file"},
		{[]string{"info", filepath.Join(dir, "missing.lsu")}, ExitError, "no such file"},
		{[]string{"show", "--pid", "999999999"}, ExitError, "process 999999999"},
		{[]string{"create", "--src", filepath.Join(dir, "nope"), "-o", filepath.Join(dir, "u"), bad}, ExitError, "not a directory"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := Main(c.args, &out, &errb)
		if code != c.exit || !strings.Contains(errb.String(), c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, errb.String(), c.exit, c.msg)
		}
		if strings.Count(strings.TrimRight(errb.String(), "\n"), "\n") != 0 {
			t.Errorf("%v: error is not one line: %q", c.args, errb.String())
		}
		if out.Len() != 0 {
			t.Errorf("%v: wrote to stdout on failure: %q", c.args, out.String())
		}
	}
}
