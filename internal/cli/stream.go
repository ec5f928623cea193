package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"livesplice/internal/agent"
	"livesplice/internal/repo"
	"livesplice/internal/server"
	"livesplice/internal/update"
)

// streamCmds are the update stream's commands: the publisher's repo and
// serve, the machine's upgrade (docs/stream.md).
func streamCmds(stdout, stderr io.Writer) []*cobra.Command {
	return []*cobra.Command{repoCmd(), serveCmd(stdout), upgradeCmd(stdout, stderr)}
}

func expiryFlags(c *cobra.Command, o *repo.Options) {
	c.Flags().DurationVar(&o.TimestampExpiry, "timestamp-expiry", 0, "how long the new timestamp is valid (default 168h)")
	c.Flags().DurationVar(&o.SnapshotExpiry, "snapshot-expiry", 0, "how long the new snapshot is valid (default 720h)")
}

func repoCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "repo",
		Short: "Publish updates in a signed update stream (TUF repository)",
	}
	var initOpt, addOpt, removeOpt, refreshOpt, rotateOpt repo.Options
	initC := &cobra.Command{
		Use:   "init DIR",
		Short: "Create a repository: keys (DIR/keys/, private), DIR/root.json (public) and an empty stream",
		Args:  args(1, "one DIR"),
		RunE:  func(cmd *cobra.Command, a []string) error { return repo.Init(a[0], initOpt) },
	}
	expiryFlags(initC, &initOpt)
	var binaries []string
	addC := &cobra.Command{
		Use:   "add DIR FILE... [--binary PATH]...",
		Short: "Publish update files; the metadata is re-signed with new versions",
		Args: func(cmd *cobra.Command, a []string) error {
			if len(a) < 2 {
				return usageError{errors.New("repo add: expected DIR and at least one update FILE")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, a []string) error { return repo.Add(a[0], a[1:], binaries, addOpt) },
	}
	addC.Flags().StringArrayVar(&binaries, "binary", nil, "a shipped build of a target: its build-id keys the target of that name or soname (repeatable)")
	expiryFlags(addC, &addOpt)
	removeC := &cobra.Command{
		Use:   "remove DIR ID...",
		Short: "Take updates out of the stream; agents undo them where they run",
		Args: func(cmd *cobra.Command, a []string) error {
			if len(a) < 2 {
				return usageError{errors.New("repo remove: expected DIR and at least one update ID")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, a []string) error { return repo.Remove(a[0], a[1:], removeOpt) },
	}
	expiryFlags(removeC, &removeOpt)
	refreshC := &cobra.Command{
		Use:   "refresh DIR",
		Short: "Re-sign snapshot and timestamp (run it from cron, more often than they expire)",
		Args:  args(1, "one DIR"),
		RunE:  func(cmd *cobra.Command, a []string) error { return repo.Refresh(a[0], refreshOpt) },
	}
	expiryFlags(refreshC, &refreshOpt)
	rotateC := &cobra.Command{
		Use:   "rotate-key DIR ROLE",
		Short: "Replace the key of a role (root, targets, snapshot or timestamp); agents follow the new root",
		Args:  args(2, "DIR and ROLE"),
		RunE:  func(cmd *cobra.Command, a []string) error { return repo.RotateKey(a[0], a[1], rotateOpt) },
	}
	expiryFlags(rotateC, &rotateOpt)
	c.AddCommand(initC, addC, removeC, refreshC, rotateC)
	return c
}

func serveCmd(stdout io.Writer) *cobra.Command {
	var addr, fleetDB string
	var noFleet bool
	c := &cobra.Command{
		Use:   "serve DIR [--addr 127.0.0.1:8470] [--fleet-db FILE | --no-fleet]",
		Short: "Serve a repository's public files over HTTP (any static web server can do the same)",
		Args:  args(1, "one repository DIR"),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			db := fleetDB
			if db == "" {
				db = filepath.Join(a[0], "fleet.db")
			}
			if noFleet {
				db = ""
			}
			return server.Serve(ctx, a[0], addr, db, func(at string) {
				fmt.Fprintf(stdout, "serving %s at http://%s\n", a[0], at)
			})
		},
	}
	c.Flags().StringVar(&addr, "addr", "127.0.0.1:8470", "address to listen on")
	c.Flags().StringVar(&fleetDB, "fleet-db", "", "the fleet database: agents' reports, shown at /fleet (default DIR/fleet.db)")
	c.Flags().BoolVar(&noFleet, "no-fleet", false, "take no fleet reports and show no fleet page")
	return c
}

// settings are the agent's flags over its configuration file.
type settings struct {
	config, repo, trust, state string
}

func (s *settings) flags(c *cobra.Command) {
	c.Flags().StringVar(&s.config, "config", agent.DefaultConfig, "configuration file (docs/stream.md)")
	c.Flags().StringVar(&s.repo, "repo", "", "update stream URL (default: repo in the configuration file)")
	c.Flags().StringVar(&s.trust, "trust", "", "pinned root metadata (default "+agent.DefaultTrust+")")
	c.Flags().StringVar(&s.state, "state", "", "agent cache and records (default "+agent.DefaultState+")")
}

// resolve reads the configuration and lets the flags override it.
func (s *settings) resolve(c *cobra.Command) (agent.Config, error) {
	cfg, err := agent.LoadConfig(s.config, c.Flags().Changed("config"))
	if err != nil {
		return cfg, err
	}
	if s.repo != "" {
		cfg.Repo = s.repo
	}
	if s.trust != "" {
		cfg.Trust = s.trust
	}
	if s.state != "" {
		cfg.State = s.state
	}
	return cfg, nil
}

func upgradeCmd(stdout, stderr io.Writer) *cobra.Command {
	var set settings
	var o agent.Options
	var all, kernel, initMode, scheduled, asJSON, verbose, report bool
	c := &cobra.Command{
		Use:   "upgrade [--repo URL] [--trust ROOT.json] [--state DIR] [--kernel] [--pid PID | --all] [--dry-run] | --init",
		Short: "Fetch, verify and apply the updates of the stream that the running processes lack",
		Args:  args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if o.Pid > 0 && all {
				return usageError{errors.New("upgrade: give --pid PID or --all, not both")}
			}
			o.Kernel = kernel
			o.NoProcesses = kernel && o.Pid == 0 && !all
			cfg, err := set.resolve(cmd)
			if err != nil {
				return err
			}
			o.Repo, o.Trust, o.State, o.Offline = cfg.Repo, cfg.Trust, cfg.State, initMode
			if initMode && scheduled && !cfg.InstallOnReboot {
				return nil // install_on_reboot = no
			}
			if !initMode && o.Repo == "" {
				return usageError{fmt.Errorf("upgrade: no update stream: give --repo URL or set repo in %s", set.config)}
			}
			o.FetchOnly = scheduled && !initMode && !cfg.AutoInstall
			o.Report, o.MachineID = cfg.Report || report, cfg.MachineID
			if verbose {
				o.Log = stderr
				o.Apply.Log = stderr
			}
			rep, err := agent.Upgrade(o)
			if err != nil {
				return err
			}
			if asJSON {
				if err := writeJSON(stdout, rep); err != nil {
					return err
				}
				return rep.Err()
			}
			if rep.ReportError != "" {
				fmt.Fprintf(stderr, "livesplice: %s\n", rep.ReportError)
			}
			ids := make([]string, 0, len(rep.Unfetched))
			for id := range rep.Unfetched {
				ids = append(ids, id)
			}
			sort.Strings(ids)
			for _, id := range ids {
				fmt.Fprintf(stderr, "livesplice: %s: not fetched: %s\n", id, rep.Unfetched[id])
			}
			if o.FetchOnly {
				fmt.Fprintf(stdout, "stream version %d: %d updates verified and cached (auto_install is off)\n", rep.StreamVersion, len(rep.Cached))
				return rep.Err()
			}
			for _, out := range rep.Outcomes {
				switch out.Result {
				case "failed":
					fmt.Fprintf(stderr, "livesplice: pid %d (%s): %s: failed: %s\n", out.Pid, out.Comm, out.ID, out.Reason)
				case "would apply", "would undo":
					fmt.Fprintf(stdout, "%d\t%s\t%s\t%s\n", out.Pid, out.Comm, out.ID, out.Result)
				}
			}
			sum, _ := rep.Summary()
			fmt.Fprintln(stdout, sum)
			return rep.Err()
		},
	}
	set.flags(c)
	c.Flags().IntVar(&o.Pid, "pid", 0, "only this process")
	c.Flags().BoolVar(&all, "all", false, "every process that runs a target of the stream, but PID 1 (the default)")
	c.Flags().BoolVar(&o.DryRun, "dry-run", false, "verify the stream and report what would be applied; change nothing")
	c.Flags().BoolVar(&initMode, "init", false, "offline: re-apply the cached verified set (at boot, or after a process restarted)")
	c.Flags().BoolVar(&kernel, "kernel", false, "the running kernel (alone, or with the processes of --pid or --all)")
	c.Flags().BoolVar(&scheduled, "scheduled", false, "run from a systemd unit: obey auto_install and install_on_reboot of the configuration")
	c.Flags().BoolVar(&asJSON, "json", false, "machine-readable outcome")
	c.Flags().BoolVar(&report, "report", false, "post the fleet report to the stream's server (as report = yes in the configuration)")
	c.Flags().DurationVar(&o.Apply.Deadline, "deadline", 0, "how long to wait for busy functions, per update (default 10s)")
	c.Flags().BoolVarP(&verbose, "verbose", "v", false, "report progress")
	return c
}

// AvailableJSON is the stable --json output of show --available.
type AvailableJSON struct {
	StreamVersion int64           `json:"stream_version"`
	Online        bool            `json:"online"` // false: from the agent's cache
	Updates       []AvailableInfo `json:"updates"`
}

// AvailableInfo is one update of the stream and where it runs here.
type AvailableInfo struct {
	ID       string   `json:"id"`
	Kind     string   `json:"kind"`
	Requires []string `json:"requires,omitempty"`
	Release  string   `json:"release,omitempty"` // kernel: the release it was built for
	Applied  []int    `json:"applied"`           // pids that run it (0: the kernel)
	Pending  []int    `json:"pending"`           // pids it is for that lack it (0: the kernel)
}

// showAvailable is show --available: the verified stream (or, without a
// repository, the cached set) and, for each update, the processes that
// run it and those that lack it.
func showAvailable(cmd *cobra.Command, set *settings, asJSON bool, stdout io.Writer) error {
	cfg, err := set.resolve(cmd)
	if err != nil {
		return err
	}
	rep, err := agent.Upgrade(agent.Options{Repo: cfg.Repo, Trust: cfg.Trust, State: cfg.State, DryRun: true, Offline: cfg.Repo == "", Kernel: true, RetryWait: time.Second})
	if err != nil {
		return err
	}
	out := AvailableJSON{StreamVersion: rep.StreamVersion, Online: cfg.Repo != "", Updates: []AvailableInfo{}}
	for _, u := range rep.Updates {
		ai := AvailableInfo{ID: u.ID, Kind: u.Kind, Requires: u.Requires, Release: u.Release, Applied: []int{}, Pending: []int{}}
		for _, o := range rep.Outcomes {
			if o.ID != u.ID {
				continue
			}
			if o.Result == "already" {
				ai.Applied = append(ai.Applied, o.Pid)
			} else if !slices.Contains(ai.Pending, o.Pid) {
				ai.Pending = append(ai.Pending, o.Pid)
			}
		}
		sort.Ints(ai.Applied)
		sort.Ints(ai.Pending)
		out.Updates = append(out.Updates, ai)
	}
	if asJSON {
		return writeJSON(stdout, out)
	}
	from := "stream " + cfg.Repo
	if cfg.Repo == "" {
		from = "cache " + cfg.State
	}
	fmt.Fprintf(stdout, "%s: version %d\n", from, out.StreamVersion)
	for _, u := range out.Updates {
		var status []string
		switch {
		case u.Kind == update.KindKernel && len(u.Applied) > 0:
			status = append(status, "applied in the kernel")
		case u.Kind == update.KindKernel && len(u.Pending) > 0:
			status = append(status, "pending for the kernel")
		case u.Kind == update.KindKernel:
			status = append(status, "for kernel "+u.Release)
		case len(u.Applied) == 0 && len(u.Pending) == 0:
			status = append(status, "not running here")
		}
		if u.Kind == update.KindProcess && len(u.Applied) > 0 {
			status = append(status, "applied in pids "+joinInts(u.Applied))
		}
		if u.Kind == update.KindProcess && len(u.Pending) > 0 {
			status = append(status, "pending for pids "+joinInts(u.Pending))
		}
		req := "-"
		if len(u.Requires) > 0 {
			req = strings.Join(u.Requires, ",")
		}
		fmt.Fprintf(stdout, "%s\t%s\trequires %s\t%s\n", u.ID, u.Kind, req, strings.Join(status, "; "))
	}
	return nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ",")
}
