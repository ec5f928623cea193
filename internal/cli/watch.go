package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"livesplice/internal/process"
	"livesplice/internal/update"
)

// WatchLine is one line of watch's --json event log: "ready" once the
// running processes are patched and new ones are caught, then one line
// per process patched, skipped or failed, and "stopped" at the end.
type WatchLine struct {
	Time   string `json:"time"`  // RFC 3339, UTC, with nanoseconds
	Event  string `json:"event"` // ready, patched, skipped, failed, stopped
	Pid    int    `json:"pid,omitempty"`
	Update string `json:"update,omitempty"`
	When   string `json:"when,omitempty"` // entry: before its program ran; running: already running
	Reason string `json:"reason,omitempty"`
}

func watchCmd(stdout, stderr io.Writer) *cobra.Command {
	var asJSON bool
	var wopt process.WatchOptions
	c := &cobra.Command{
		Use:   "watch [--json] [--rescan DURATION] FILE...",
		Short: "Keep applying updates to every process that runs their targets, also to processes that start later (daemon)",
		Args: func(cmd *cobra.Command, a []string) error {
			if len(a) == 0 {
				return usageError{fmt.Errorf("%s: expected one or more update FILEs", cmd.CommandPath())}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, a []string) error {
			var files []*update.File
			for _, name := range a {
				f, err := update.ReadFile(name)
				if err != nil {
					return err
				}
				files = append(files, f)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			var mu sync.Mutex // Ready and Report come from different goroutines
			emit := func(l WatchLine) {
				mu.Lock()
				defer mu.Unlock()
				if asJSON {
					l.Time = time.Now().UTC().Format(time.RFC3339Nano)
					b, _ := json.Marshal(l)
					fmt.Fprintf(stdout, "%s\n", b)
					return
				}
				switch l.Event {
				case "patched":
					when := l.When
					if l.Reason != "" {
						when += ": " + l.Reason
					}
					fmt.Fprintf(stdout, "pid %d: patched %s (%s)\n", l.Pid, l.Update, when)
				case "skipped", "failed":
					fmt.Fprintf(stderr, "livesplice: pid %d: %s %s: %s\n", l.Pid, l.Event, l.Update, l.Reason)
				}
			}
			wopt.Report = func(ev process.WatchEvent) {
				emit(WatchLine{Event: ev.Result, Pid: ev.Pid, Update: ev.Update, When: ev.When, Reason: ev.Reason})
			}
			wopt.Ready = func() {
				emit(WatchLine{Event: "ready"})
				notifySystemd("READY=1")
			}
			err := process.Watch(ctx, files, wopt)
			notifySystemd("STOPPING=1")
			if err != nil {
				return fmt.Errorf("watch: %w", err)
			}
			emit(WatchLine{Event: "stopped"})
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "one JSON object per event")
	c.Flags().DurationVar(&wopt.Rescan, "rescan", 0, "also patch running processes this often (catches libraries loaded with dlopen; 0: only at start)")
	c.Flags().DurationVar(&wopt.Deadline, "deadline", 0, "how long to wait for busy functions, and for a new process to reach its entry point (default 10s)")
	return c
}

// notifySystemd tells systemd (Type=notify) about the daemon's state; a
// no-op outside such a unit.
func notifySystemd(state string) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:]
	}
	conn, err := net.DialTimeout("unixgram", addr, time.Second)
	if err != nil {
		return
	}
	defer conn.Close()
	conn.Write([]byte(state))
}
