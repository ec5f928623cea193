package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"livesplice/internal/fleet"
	"livesplice/internal/repo"
	"livesplice/internal/update"
)

// chromiumNames are the Debian packages' browsers, smallest first;
// .ci/run installs chromium-headless-shell.
var chromiumNames = []string{"chromium-headless-shell", "chromium"}

// findChromium fails the test (never skips it) when no headless Chromium is
// installed: the fleet page is only tested in a real browser.
func findChromium(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs a browser (make test installs chromium-headless-shell)")
	}
	for _, name := range chromiumNames {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("no headless Chromium (looked for %s in PATH): run .ci/run, which installs chromium-headless-shell", strings.Join(chromiumNames, ", "))
	return ""
}

// publish adds a minimal process update to the stream in dir.
func publish(t *testing.T, dir, id string, requires ...string) {
	t.Helper()
	f := &update.File{ID: id, Kind: update.KindProcess, Patch: strings.Repeat("0", 64), Requires: requires,
		Targets: []update.Target{{Path: "sbin/nginx", PreBuildID: "0123456789abcdef"}}}
	data, err := update.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), repo.FileName(id))
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := repo.Add(dir, []string{p}, nil, repo.Options{}); err != nil {
		t.Fatal(err)
	}
}

// pageRow is what the browser shows of one table row.
type pageRow struct {
	Key        string            `json:"key"`   // data-machine or data-update
	Class      string            `json:"class"` // the row's class attribute
	Background string            `json:"background"`
	Cells      map[string]string `json:"cells"` // column header -> text shown
}

// readTable is run in the page: the rows of a table as the user sees
// them, each cell under its column's header.
const readTable = `((id, key) => {
	const t = document.getElementById(id);
	if (!t) return null;
	const head = [...t.rows[0].cells].map(c => c.innerText.trim());
	return [...t.querySelectorAll("tr[" + key + "]")].map(r => ({
		key: r.getAttribute(key),
		class: r.className,
		background: getComputedStyle(r).backgroundColor,
		cells: Object.fromEntries([...r.cells].map((c, i) => [head[i], c.innerText.trim()])),
	}));
})`

// The fleet page of `livesplice serve`, loaded in headless Chromium: a
// stream at version 3 (fix-1, then fix-2 built on it), one machine up to
// date running both, one that last verified version 2 and runs fix-1
// only. The page must show both machines, mark the second one behind
// (a class that changes how the row looks, and the word in its state
// column), say which updates run where, and raise no JavaScript error.
func TestFleetPageInBrowser(t *testing.T) {
	chromium := findChromium(t)

	dir := filepath.Join(t.TempDir(), "repo")
	if err := repo.Init(dir, repo.Options{}); err != nil {
		t.Fatal(err)
	}
	publish(t, dir, "fix-1")
	publish(t, dir, "fix-2", "fix-1")
	current, err := repo.Version(dir)
	if err != nil || current != 3 {
		t.Fatalf("stream version after two updates: %d, %v", current, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := make(chan string, 1)
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, dir, "127.0.0.1:0", filepath.Join(t.TempDir(), "fleet.db"), func(a string) { addr <- a })
	}()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case err := <-served:
		t.Fatalf("serve: %v", err)
	}
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	for _, r := range []fleet.Report{
		{MachineID: "web-0001", Hostname: "web1", StreamVersion: 3, Time: time.Now().UTC().Format(time.RFC3339),
			Targets: []fleet.Target{{Name: "nginx", BuildID: "0123456789abcdef", Updates: []string{"fix-1", "fix-2"}, Pids: []int{101}}}},
		{MachineID: "db-0002", Hostname: "db1", StreamVersion: 2, Time: time.Now().UTC().Format(time.RFC3339),
			Targets: []fleet.Target{{Name: "nginx", BuildID: "0123456789abcdef", Updates: []string{"fix-1"}, Pids: []int{202}}}},
	} {
		body, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		res, err := http.Post(base+"/fleet/report", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatalf("report of %s: %v", r.MachineID, err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNoContent {
			t.Fatalf("report of %s: %s", r.MachineID, res.Status)
		}
	}

	// Every uncaught exception, console.error and error entry of the
	// browser log (a failed load, a blocked resource) the page causes.
	var mu sync.Mutex
	var pageErrors []string
	noteError := func(ev any) {
		var msg string
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := e.ExceptionDetails
			msg = fmt.Sprintf("exception at %s:%d:%d: %s", d.URL, d.LineNumber+1, d.ColumnNumber+1, d.Text)
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if e.Type != runtime.ConsoleAPICalledTypeError && e.Type != runtime.ConsoleAPICalledTypeAssert {
				return
			}
			var args []string
			for _, a := range e.Args {
				args = append(args, strings.Trim(string(a.Value), `"`)+a.Description)
			}
			msg = fmt.Sprintf("console.%s: %s", e.Type, strings.Join(args, " "))
		case *log.EventEntryAdded:
			if e.Entry.Level != log.EntryLevelError {
				return
			}
			msg = fmt.Sprintf("browser log (%s): %s %s", e.Entry.Source, e.Entry.Text, e.Entry.URL)
		default:
			return
		}
		mu.Lock()
		pageErrors = append(pageErrors, msg)
		mu.Unlock()
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox)
	// A bound on a hung browser, not a timed assertion.
	bctx, bcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer bcancel()
	actx, acancel := chromedp.NewExecAllocator(bctx, opts...)
	defer acancel()
	tctx, tcancel := chromedp.NewContext(actx, chromedp.WithListener(noteError))
	defer tcancel()

	fail := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("headless Chromium (%s) on %s/fleet: %s: %v", chromium, base, what, err)
		}
	}
	fail("load", chromedp.Do(tctx, chromedp.Navigate(base+"/fleet"), chromedp.WaitVisible(chromedp.CSS(`#updates tr[data-update]`))))
	streamVersion, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS(`#stream-version`)))
	fail("stream version", err)
	machines, err := chromedp.Run(tctx, chromedp.Evaluate[[]pageRow](readTable+`("machines", "data-machine")`))
	fail("machines table", err)
	updates, err := chromedp.Run(tctx, chromedp.Evaluate[[]pageRow](readTable+`("updates", "data-update")`))
	fail("updates table", err)

	if streamVersion != "3" {
		t.Errorf("stream version shown: %q, want 3", streamVersion)
	}
	rows := map[string]pageRow{}
	for _, r := range machines {
		rows[r.Key] = r
	}
	web, db := rows["web-0001"], rows["db-0002"]
	if len(machines) != 2 || web.Key == "" || db.Key == "" {
		t.Fatalf("machines shown: %+v, want web-0001 and db-0002", machines)
	}
	if web.Cells["machine"] != "web-0001" || db.Cells["machine"] != "db-0002" || web.Cells["host"] != "web1" || db.Cells["host"] != "db1" {
		t.Errorf("machine and host columns: %+v / %+v", web.Cells, db.Cells)
	}
	if !strings.Contains(" "+db.Class+" ", " behind ") || !strings.HasPrefix(db.Cells["state"], "behind") {
		t.Errorf("db-0002 (verified stream 2 of 3) is not marked behind: class %q, state %q", db.Class, db.Cells["state"])
	}
	if strings.Contains(web.Class, "behind") || web.Cells["state"] != "current" {
		t.Errorf("web-0001 (up to date) is marked: class %q, state %q", web.Class, web.Cells["state"])
	}
	if db.Background == web.Background {
		t.Errorf("the behind row looks like the current one (background %s)", db.Background)
	}
	if web.Cells["targets"] != "nginx: fix-1, fix-2" || db.Cells["targets"] != "nginx: fix-1" {
		t.Errorf("targets shown: web-0001 %q, db-0002 %q", web.Cells["targets"], db.Cells["targets"])
	}

	where := map[string]string{}
	for _, u := range updates {
		where[u.Key] = u.Cells["update"] + " on " + u.Cells["runs on"]
	}
	want := map[string]string{"fix-1": "fix-1 on db-0002, web-0001", "fix-2": "fix-2 on web-0001"}
	if len(where) != len(want) || where["fix-1"] != want["fix-1"] || where["fix-2"] != want["fix-2"] {
		t.Errorf("which updates run where: %q, want %q", where, want)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(pageErrors) > 0 {
		t.Errorf("the fleet page raised errors in the browser:\n%s", strings.Join(pageErrors, "\n"))
	}
}
