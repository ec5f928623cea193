package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"livesplice/internal/create"
	"livesplice/internal/update"
)

// createDeb is create --deb: an update for the files a Debian source
// package's installed binary packages ship (docs/deb.md).
func createDeb(cmd *cobra.Command, pkg, version, to, id, out string, keep bool, a []string, stderr io.Writer) error {
	if out == "" {
		return usageError{errors.New("create --deb: -o FILE is required")}
	}
	if cmd.Flags().Changed("src") || cmd.Flags().Changed("build") || cmd.Flags().Changed("kernel") {
		return usageError{errors.New("create --deb: --src, --build and --kernel do not go with --deb (the source comes from apt, the build from debian/rules)")}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	o := create.DebOptions{Package: pkg, Version: version, To: to, ID: id, Self: self, KeepWork: keep, Log: stderr}
	if len(a) == 1 {
		o.Patch = a[0]
	}
	if isTerminal(stderr) {
		o.Progress = stderr
	}
	f, err := create.CreateDeb(context.Background(), o)
	if errors.Is(err, create.ErrNothingToDo) {
		fmt.Fprintln(cmd.OutOrStdout(), err)
		return nil
	}
	if err != nil {
		return err
	}
	return update.WriteFile(out, f)
}
