// Package cli is livesplice's command line: the cobra commands, their
// human and --json output, and the mapping of errors to exit codes.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"livesplice/internal/agent"
	"livesplice/internal/create"
	"livesplice/internal/kbuild"
	"livesplice/internal/kernel"
	"livesplice/internal/objdiff"
	"livesplice/internal/process"
	"livesplice/internal/ptrace"
	"livesplice/internal/state"
	"livesplice/internal/target"
	"livesplice/internal/update"
)

// Exit codes (README.md lists them).
const (
	ExitOK         = 0
	ExitError      = 1 // anything else: I/O, build failure, bad file
	ExitUsage      = 2 // bad command line
	ExitMismatch   = 3 // the update is not for this target (run-pre match, target not mapped)
	ExitBusy       = 4 // a function stayed busy past the deadline
	ExitRefused    = 5 // create: the patch changes no code, or a change cannot be spliced
	ExitState      = 6 // already applied, not applied, or a later update depends on it
	ExitPermission = 7 // not allowed to attach (permissions, another tracer)
	ExitHook       = 8 // a hook of the update vetoed, failed or did not return in time
	ExitVerify     = 9 // update stream: a signature, expiry, version, length or hash check failed
)

type usageError struct{ error }

// Main runs the command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return ExitOK
	}
	if strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "unknown shorthand flag") {
		err = usageError{err}
	}
	msg := oneLine(err.Error())
	if (errors.Is(err, unix.EPERM) || errors.Is(err, process.ErrNotPermitted)) && !errors.Is(err, ptrace.ErrTraced) {
		msg += " (run as root, or as the process's owner where /proc/sys/kernel/yama/ptrace_scope allows ptrace)"
	}
	fmt.Fprintf(stderr, "livesplice: %s\n", msg)
	return ExitCode(err)
}

func oneLine(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ") }

// ExitCode maps an error to the documented exit code.
func ExitCode(err error) int {
	var ue usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ue), errors.Is(err, create.ErrBadID):
		return ExitUsage
	case errors.Is(err, target.ErrWrongKind), errors.Is(err, target.ErrMismatch):
		return ExitMismatch
	case errors.Is(err, target.ErrBusy):
		return ExitBusy
	case errors.Is(err, create.ErrNoChange), errors.Is(err, objdiff.ErrUnsupported), errors.Is(err, kbuild.ErrUnsupported):
		return ExitRefused
	case errors.Is(err, target.ErrApplied), errors.Is(err, target.ErrNotApplied), errors.Is(err, target.ErrDependent):
		return ExitState
	case errors.Is(err, ptrace.ErrTraced), errors.Is(err, unix.EPERM), errors.Is(err, target.ErrPermission):
		return ExitPermission
	case errors.Is(err, target.ErrHook):
		return ExitHook
	case errors.Is(err, agent.ErrVerify):
		return ExitVerify
	}
	return ExitError
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "livesplice",
		Short:         "Rebootless updates: splice a source fix into running code, and take it out again",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(createCmd(stderr), applyCmd(stdout, stderr), undoCmd(stdout, stderr), showCmd(stdout), infoCmd(stdout))
	root.AddCommand(streamCmds(stdout, stderr)...)
	root.AddCommand(watchCmd(stdout, stderr))
	return root
}

func args(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if len(a) != n {
			return usageError{fmt.Errorf("%s: expected %s (see '%s --help')", cmd.CommandPath(), what, cmd.CommandPath())}
		}
		return nil
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func createCmd(stderr io.Writer) *cobra.Command {
	var src, buildCmd, id, out, config, headers string
	var debPkg, debVersion, debTo string
	var keep, kern, split bool
	var requires []string
	c := &cobra.Command{
		Use:   "create --src DIR [--build CMD] [--id ID] -o FILE PATCH\n  create --kernel --src LINUXSRC --config CONFIG [--headers DIR] [--id ID] -o FILE PATCH\n  create --deb SRCPKG [--version V] (PATCH | --to NEWVERSION) [--id ID] -o FILE\n  create --deb SRCPKG [--version V] --to NEWVERSION --split -o DIR",
		Short: "Build an update from a source patch",
		Args: func(cmd *cobra.Command, a []string) error {
			if debTo != "" {
				return args(0, "no PATCH with --to")(cmd, a)
			}
			return args(1, "one PATCH")(cmd, a)
		},
		RunE: func(cmd *cobra.Command, a []string) error {
			if debPkg != "" {
				return createDeb(cmd, debOpts{pkg: debPkg, version: debVersion, to: debTo, id: id, out: out, keep: keep, split: split, requires: requires}, a, stderr)
			}
			if debVersion != "" || debTo != "" || split {
				return usageError{errors.New("create: --version, --to and --split only go with --deb")}
			}
			if src == "" || out == "" {
				return usageError{errors.New("create: --src DIR and -o FILE are required")}
			}
			if kern != (config != "") || (headers != "" && !kern) {
				return usageError{errors.New("create: --kernel needs --config CONFIG; --config and --headers only go with --kernel")}
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			var f *update.File
			if kern {
				o := create.KernelOptions{Src: src, Config: config, Headers: headers, Patch: a[0], ID: id, KeepWork: keep}
				if isTerminal(stderr) {
					o.Progress = stderr
				}
				f, err = create.CreateKernel(context.Background(), o)
			} else {
				o := create.Options{Src: src, Patch: a[0], BuildCmd: buildCmd, ID: id, Self: self, KeepWork: keep}
				if isTerminal(stderr) {
					o.Progress = stderr
				}
				f, err = create.Create(context.Background(), o)
			}
			if err != nil {
				return err
			}
			f.Requires = append(f.Requires, requires...)
			return update.WriteFile(out, f)
		},
	}
	c.Flags().StringVar(&src, "src", "", "unpatched source tree (never modified)")
	c.Flags().StringVar(&buildCmd, "build", "make", "command that builds the tree")
	c.Flags().StringVar(&id, "id", "", "update id (default: the patch's name without extension)")
	c.Flags().StringVarP(&out, "output", "o", "", "update file to write")
	c.Flags().BoolVar(&keep, "keep-work", false, "keep the pre and post build trees")
	c.Flags().StringSliceVar(&requires, "requires", nil, "`ID`s of the updates this one was built on: apply refuses it until they are applied")
	c.Flags().BoolVar(&kern, "kernel", false, "build a livepatch update for the running Linux kernel (docs/kernel.md)")
	c.Flags().StringVar(&config, "config", "", "with --kernel: the kernel's config (/boot/config-RELEASE)")
	c.Flags().StringVar(&headers, "headers", "", "with --kernel: the kernel's linux-headers directory (release, Module.symvers)")
	c.Flags().StringVar(&debPkg, "deb", "", "build an update for the installed files of Debian source package `SRCPKG` (docs/deb.md)")
	c.Flags().StringVar(&debVersion, "version", "", "with --deb: the source version (default: the installed one)")
	c.Flags().StringVar(&debTo, "to", "", "with --deb: the fix is what source version `NEWVERSION` changed in code (no PATCH)")
	c.Flags().BoolVar(&split, "split", false, "with --deb --to: one update per patch NEWVERSION adds to debian/patches, written to the directory -o DIR")
	return c
}

// AllJSON is the stable --json output of apply --all and undo --all.
type AllJSON struct {
	Summary   string            `json:"summary"`
	Processes []process.Outcome `json:"processes"`
}

// reportAll prints a fleet operation's outcome: failures and skips on
// stderr, the summary on stdout (or everything as JSON), and fails if any
// process failed.
func reportAll(op string, outs []process.Outcome, asJSON bool, stdout, stderr io.Writer) error {
	sum, failed := process.Summary(outs)
	if asJSON {
		if outs == nil {
			outs = []process.Outcome{}
		}
		if err := writeJSON(stdout, AllJSON{Summary: sum, Processes: outs}); err != nil {
			return err
		}
	} else {
		for _, o := range outs {
			if o.Result == "failed" || o.Result == "skipped" {
				fmt.Fprintf(stderr, "livesplice: pid %d: %s: %s\n", o.Pid, o.Result, o.Reason)
			}
		}
		fmt.Fprintln(stdout, sum)
	}
	if failed > 0 {
		return fmt.Errorf("%s --all: %d of %d processes failed", op, failed, len(outs))
	}
	return nil
}

func applyCmd(stdout, stderr io.Writer) *cobra.Command {
	var pid int
	var kern bool
	var all, asJSON bool
	var opt process.Options
	var verbose bool
	c := &cobra.Command{
		Use:   "apply (--pid PID | --all | --kernel) FILE",
		Short: "Apply an update to a running process, or to every process that runs its target",
		Args:  args(1, "one update FILE"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if n := btoi(pid > 0) + btoi(all) + btoi(kern); n != 1 {
				return usageError{errors.New("apply: give one of --pid PID, --all or --kernel")}
			}
			f, err := update.ReadFile(a[0])
			if err != nil {
				return err
			}
			if verbose {
				opt.Log = stderr
			}
			if all {
				return reportAll("apply", process.ApplyAll(f, opt), asJSON, stdout, stderr)
			}
			return chosen(pid, kern).Apply(f, opt.Options)
		},
	}
	c.Flags().IntVar(&pid, "pid", 0, "process to patch")
	c.Flags().BoolVar(&kern, "kernel", false, "patch the running kernel (a kernel update: livepatch module)")
	c.Flags().BoolVar(&all, "all", false, "every process that maps a target of FILE (never PID 1)")
	c.Flags().BoolVar(&asJSON, "json", false, "with --all: machine-readable outcome")
	c.Flags().DurationVar(&opt.Deadline, "deadline", 0, "how long to wait for busy functions (default 10s)")
	c.Flags().DurationVar(&opt.HookTimeout, "hook-timeout", 0, "how long each of the update's hooks may run in the process (default 5s)")
	c.Flags().BoolVarP(&verbose, "verbose", "v", false, "report progress")
	return c
}

// chosen is the target of --pid PID or --kernel.
func chosen(pid int, kern bool) target.Target {
	if kern {
		return kernel.Target()
	}
	return process.Target(pid)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func undoCmd(stdout, stderr io.Writer) *cobra.Command {
	var pid int
	var kern bool
	var all, asJSON bool
	var opt process.Options
	c := &cobra.Command{
		Use:   "undo (--pid PID | --all | --kernel) ID",
		Short: "Take an applied update out of a running process, or out of every process that has it",
		Args:  args(1, "one update ID"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if n := btoi(pid > 0) + btoi(all) + btoi(kern); n != 1 {
				return usageError{errors.New("undo: give one of --pid PID, --all or --kernel")}
			}
			if all {
				return reportAll("undo", process.UndoAll(a[0], opt), asJSON, stdout, stderr)
			}
			return chosen(pid, kern).Undo(a[0], opt.Options)
		},
	}
	c.Flags().IntVar(&pid, "pid", 0, "process to unpatch")
	c.Flags().BoolVar(&kern, "kernel", false, "take a kernel update out of the running kernel")
	c.Flags().BoolVar(&all, "all", false, "every process that has the update applied")
	c.Flags().BoolVar(&asJSON, "json", false, "with --all: machine-readable outcome")
	c.Flags().DurationVar(&opt.Deadline, "deadline", 0, "how long to wait for busy functions (default 10s)")
	c.Flags().DurationVar(&opt.HookTimeout, "hook-timeout", 0, "how long each of the update's hooks may run in the process (default 5s)")
	return c
}

// ShowJSON is the stable --json output of show.
type ShowJSON struct {
	Pid     int             `json:"pid"`
	Updates []process.Shown `json:"updates"`
}

func showCmd(stdout io.Writer) *cobra.Command {
	var pid int
	var kern bool
	var all, asJSON, available bool
	var gdbDir string
	var perfMap bool
	var set settings
	c := &cobra.Command{
		Use:   "show (--pid PID | --all | --available | --kernel) [--json]",
		Short: "List the updates applied to a running process (oldest first), or to every process, or those the stream offers",
		Args:  args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if available {
				return showAvailable(cmd, &set, asJSON, stdout)
			}
			if kern {
				return showKernel(pid, all, asJSON, stdout)
			}
			if (pid <= 0) == !all {
				return usageError{errors.New("show: give --pid PID or --all")}
			}
			if all {
				procs := process.ShowAll()
				if asJSON {
					return writeJSON(stdout, procs)
				}
				for _, p := range procs {
					for _, u := range p.Updates {
						fmt.Fprintf(stdout, "%d\t%s\t%s\t%s\t%s\n", p.Pid, p.Comm, u.ID, u.Status, u.Running)
					}
				}
				return nil
			}
			if perfMap {
				path, err := process.PerfMap(pid)
				if err != nil {
					return err
				}
				fmt.Fprintln(stdout, path)
				return nil
			}
			if gdbDir != "" {
				script, err := process.GDBSymbols(pid, gdbDir)
				if err != nil {
					return err
				}
				fmt.Fprintf(stdout, "gdb -p %d -x %s\n", pid, script)
				return nil
			}
			shown, err := process.Show(pid)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(stdout, ShowJSON{Pid: pid, Updates: shown})
			}
			for _, u := range shown {
				names := make([]string, 0, len(u.Funcs))
				for _, f := range u.Funcs {
					names = append(names, f.Name)
				}
				status := u.Status
				if u.Status != state.StatusApplied || u.Running != "new" {
					status += " (interrupted; running " + u.Running + " code; the next apply or undo finishes it)"
				}
				fmt.Fprintf(stdout, "%s\t%s\t%s\t%s\t%s\n", u.ID, status, u.AppliedAt, strings.Join(u.Targets, ","), strings.Join(names, ","))
			}
			return nil
		},
	}
	c.Flags().IntVar(&pid, "pid", 0, "process to inspect")
	c.Flags().BoolVar(&kern, "kernel", false, "the livesplice updates loaded into the running kernel")
	c.Flags().BoolVar(&all, "all", false, "every process livesplice has patched")
	c.Flags().StringVar(&gdbDir, "gdb", "", "with --pid: write symbol files of the patched code and a gdb script into `DIR`")
	c.Flags().BoolVar(&perfMap, "perf-map", false, "with --pid: add the patched functions to /tmp/perf-PID.map, where perf finds names of code in anonymous memory")
	c.Flags().BoolVar(&available, "available", false, "the updates of the stream (--repo) or the agent's cache, and where they run")
	set.flags(c)
	c.Flags().BoolVar(&asJSON, "json", false, "machine-readable output")
	return c
}

// InfoJSON is the stable --json output of info.
type InfoJSON struct {
	ID       string         `json:"id"`
	Format   int            `json:"format"`
	Kind     string         `json:"kind"`
	Patch    string         `json:"patch_sha256"`
	Requires []string       `json:"requires,omitempty"`
	Debian   *update.Debian `json:"debian,omitempty"`
	Targets  []TargetInfo   `json:"targets"`
}

// TargetInfo summarises one target of an update.
type TargetInfo struct {
	Path       string     `json:"path"`
	Soname     string     `json:"soname,omitempty"`
	PreBuildID string     `json:"pre_build_id,omitempty"`
	Functions  []FuncInfo `json:"functions"`
	CodeBytes  uint64     `json:"code_bytes"`
	DataBytes  uint64     `json:"data_bytes"`
	Hooks      []HookInfo `json:"hooks,omitempty"`
}

// HookInfo is one hook of an update (docs/custom-code.md), in call order.
type HookInfo struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// FuncInfo is one function of an update.
type FuncInfo struct {
	Name   string `json:"name"`
	File   string `json:"file,omitempty"`
	Status string `json:"status"`
	Size   uint64 `json:"size"`
	// Why the function is in the update (update.Reason kinds).
	Why []update.Reason `json:"why,omitempty"`
}

// Info summarises an update file.
func Info(f *update.File) InfoJSON {
	out := InfoJSON{ID: f.ID, Format: f.Format, Kind: f.Kind, Patch: f.Patch, Requires: f.Requires, Debian: f.Debian, Targets: []TargetInfo{}}
	for _, t := range f.Targets {
		ti := TargetInfo{Path: t.Path, Soname: t.Soname, PreBuildID: t.PreBuildID, Functions: []FuncInfo{}}
		for _, s := range t.Sections {
			if s.Kind == update.KindText {
				ti.CodeBytes += s.Size
			} else {
				ti.DataBytes += s.Size
			}
		}
		for _, h := range t.Hooks {
			ti.Hooks = append(ti.Hooks, HookInfo{Kind: h.Kind, Name: h.Name})
		}
		for _, fn := range t.Functions {
			ti.Functions = append(ti.Functions, FuncInfo{Name: fn.Name, File: fn.File, Status: fn.Status, Size: fn.Size, Why: fn.Why})
		}
		out.Targets = append(out.Targets, ti)
	}
	return out
}

func infoCmd(stdout io.Writer) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "info FILE [--json]",
		Short: "Describe what an update file holds",
		Args:  args(1, "one update FILE"),
		RunE: func(cmd *cobra.Command, a []string) error {
			f, err := update.ReadFile(a[0])
			if err != nil {
				return err
			}
			in := Info(f)
			if asJSON {
				return writeJSON(stdout, in)
			}
			fmt.Fprintf(stdout, "id:      %s\nformat:  %d\nkind:    %s\npatch:   sha256:%s\n", in.ID, in.Format, in.Kind, in.Patch)
			if len(in.Requires) > 0 {
				fmt.Fprintf(stdout, "requires: %s\n", strings.Join(in.Requires, ", "))
			}
			if d := in.Debian; d != nil {
				fmt.Fprintf(stdout, "debian:  source package %s %s", d.Source, d.From)
				if d.To != "" {
					fmt.Fprintf(stdout, " -> %s", d.To)
				}
				fmt.Fprintln(stdout)
				if d.Patch != "" {
					fmt.Fprintf(stdout, "  patch: debian/patches/%s\n", d.Patch)
				}
				if len(d.CVEs) > 0 {
					fmt.Fprintf(stdout, "  CVEs:  %s\n", strings.Join(d.CVEs, " "))
				}
			}
			for _, t := range in.Targets {
				fmt.Fprintf(stdout, "target:  %s", t.Path)
				if t.Soname != "" {
					fmt.Fprintf(stdout, " (soname %s)", t.Soname)
				}
				fmt.Fprintf(stdout, "\n  pre build-id: %s\n  code: %d bytes, data: %d bytes\n", t.PreBuildID, t.CodeBytes, t.DataBytes)
				for _, fn := range t.Functions {
					name := fn.Name
					if fn.File != "" {
						name += " (" + fn.File + ")"
					}
					why := ""
					if len(fn.Why) > 0 {
						rs := make([]string, len(fn.Why))
						for i, r := range fn.Why {
							rs[i] = r.String()
						}
						why = ": " + strings.Join(rs, "; ")
					}
					fmt.Fprintf(stdout, "  %-8s %s, %d bytes%s\n", fn.Status, name, fn.Size, why)
				}
				for _, h := range t.Hooks {
					fmt.Fprintf(stdout, "  hook     %s %s\n", h.Kind, h.Name)
				}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "machine-readable output")
	return c
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
