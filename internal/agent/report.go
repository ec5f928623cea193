package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"livesplice/internal/fleet"
)

// postReport sends the fleet report: this machine, the targets it runs and
// their effective versions. Only the stream's own server takes it.
func postReport(o Options, rec *Record, rep *Report) error {
	id := o.MachineID
	if id == "" {
		b, err := os.ReadFile("/etc/machine-id")
		if err != nil {
			return fmt.Errorf("fleet report: machine id: %w (set machine_id in the configuration)", err)
		}
		id = strings.TrimSpace(string(b))
	}
	host, _ := os.Hostname()
	_, failed := rep.Summary()
	r := fleet.Report{MachineID: id, Hostname: host, StreamVersion: rec.Stream.Version, Failed: failed, Targets: []fleet.Target{}, Time: time.Now().UTC().Format(time.RFC3339)}
	keys := make([]string, 0, len(rec.Targets))
	for k := range rec.Targets {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t := rec.Targets[k]
		r.Targets = append(r.Targets, fleet.Target{Name: t.Name, BuildID: t.BuildID, Updates: t.Updates, Pids: t.Pids})
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: 30 * time.Second}
	res, err := c.Post(strings.TrimSuffix(o.Repo, "/")+"/fleet/report", "application/json", bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("fleet report: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return fmt.Errorf("fleet report: %s: %s", res.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}
