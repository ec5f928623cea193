package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// create --deb --split's usage errors, before anything is fetched.
func TestDebSplitUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"create", "--deb", "x", "--to", "2", "--split", "--id", "y", "-o", "d"}, "names each update itself (no --id)"},
		{[]string{"create", "--split", "--src", "s", "-o", "x", "p.patch"}, "--version, --to and --split only go with --deb"},
		{[]string{"create", "--deb", "x", "--to", "2", "--split"}, "-o"},
		// A PATCH with --split, with or without --to: no -o DIR made.
		{[]string{"create", "--deb", "x", "--split", "-o", "OUT", "p.patch"}, "PATCH"},
		{[]string{"create", "--deb", "x", "--to", "2", "--split", "-o", "OUT", "p.patch"}, "PATCH"},
		{[]string{"create", "--deb", "x", "--version", "1", "--split", "-o", "OUT", "p.patch"}, "PATCH"},
	} {
		outDir := filepath.Join(t.TempDir(), "out")
		for i := range c.args {
			if c.args[i] == "OUT" {
				c.args[i] = outDir
			}
		}
		var out, errb bytes.Buffer
		if code := Main(c.args, &out, &errb); code != ExitUsage || !strings.Contains(errb.String(), c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, errb.String(), ExitUsage, c.msg)
		}
		if _, err := os.Stat(outDir); !os.IsNotExist(err) {
			t.Errorf("%v: made -o %s (%v)", c.args, outDir, err)
		}
	}
}
