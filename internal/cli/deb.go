package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"livesplice/internal/create"
	"livesplice/internal/update"
)

// debOpts are create --deb's flags.
type debOpts struct {
	pkg, version, to, id, out string
	keep, split               bool
	requires                  []string
}

// createDeb is create --deb: an update for the files a Debian source
// package's installed binary packages ship (docs/deb.md).
func createDeb(cmd *cobra.Command, d debOpts, a []string, stderr io.Writer) error {
	if d.out == "" {
		return usageError{errors.New("create --deb: -o FILE (with --split: -o DIR) is required")}
	}
	if cmd.Flags().Changed("src") || cmd.Flags().Changed("build") || cmd.Flags().Changed("kernel") {
		return usageError{errors.New("create --deb: --src, --build and --kernel do not go with --deb (the source comes from apt, the build from debian/rules)")}
	}
	// CreateDebSplit relies on these: --to, no PATCH (with --to, Args
	// refuses one), no --id; checked before -o DIR is made.
	if d.split && (d.to == "" || len(a) > 0 || d.id != "") {
		return usageError{errors.New("create --deb --split: needs --to NEWVERSION and no PATCH (one update per patch it adds), and names each update itself (no --id)")}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	o := create.DebOptions{Package: d.pkg, Version: d.version, To: d.to, ID: d.id, Self: self, KeepWork: d.keep, Log: stderr}
	if len(a) == 1 {
		o.Patch = a[0]
	}
	if isTerminal(stderr) {
		o.Progress = stderr
	}
	if d.split {
		return createDebSplit(cmd, o, d, stderr)
	}
	f, err := create.CreateDeb(context.Background(), o)
	if errors.Is(err, create.ErrNothingToDo) {
		fmt.Fprintln(cmd.OutOrStdout(), err)
		return nil
	}
	if err != nil {
		return err
	}
	f.Requires = append(f.Requires, d.requires...)
	return update.WriteFile(d.out, f)
}

// createDebSplit is create --deb --to --split: one update file per patch
// of the new version, written to the directory d.out as ID.lsu; one line
// per patch on stdout; an error if any patch could not be made.
func createDebSplit(cmd *cobra.Command, o create.DebOptions, d debOpts, stderr io.Writer) error {
	if err := os.MkdirAll(d.out, 0o755); err != nil {
		return err
	}
	res, err := create.CreateDebSplit(context.Background(), o)
	if err != nil {
		return err
	}
	stdout := cmd.OutOrStdout()
	var failed []string
	madeAny := false
	for _, r := range res {
		cves := ""
		if len(r.CVEs) > 0 {
			cves = " (" + strings.Join(r.CVEs, " ") + ")"
		}
		switch {
		case r.File != nil:
			if !madeAny {
				r.File.Requires = slices.Concat(d.requires, r.File.Requires)
			}
			madeAny = true
			path := filepath.Join(d.out, r.File.ID+".lsu")
			if err := update.WriteFile(path, r.File); err != nil {
				return err
			}
			req := ""
			if len(r.File.Requires) > 0 {
				req = ", requires " + strings.Join(r.File.Requires, ", ")
			}
			fmt.Fprintf(stdout, "made %s: debian/patches/%s%s%s\n", path, r.Name, cves, req)
		case r.Err != nil && r.Name == create.SplitRest:
			failed = append(failed, r.Name)
			fmt.Fprintf(stdout, "not made: %v\n", r.Err)
		case r.Err != nil:
			failed = append(failed, r.Name)
			fmt.Fprintf(stdout, "not made: debian/patches/%s%s: %v\n", r.Name, cves, r.Err)
		default:
			fmt.Fprintf(stdout, "nothing to do: debian/patches/%s%s: %s\n", r.Name, cves, r.Skip)
		}
	}
	if len(res) == 0 {
		fmt.Fprintf(stdout, "nothing to do: %s %s adds no patch to debian/patches\n", o.Package, o.To)
	}
	if len(failed) > 0 {
		return fmt.Errorf("create --deb --split: %d of %d patches not made: %s", len(failed), len(res), strings.Join(failed, ", "))
	}
	return nil
}
