// Command corpus measures create --deb on real Debian security uploads
// (make corpus; not part of make test: each package is a full Debian
// build). For each row of docs/corpus.tsv it installs the old binary
// packages, starts a process that maps or runs the shipped object, runs
// `livesplice create --deb SRC --version OLD --to NEW --split -o DIR`,
// applies each made update to the process in order, undoes them in
// reverse, checks that the process still runs, reinstalls the newer
// version, and writes docs/corpus.md: per package and per fix, made /
// applied / undone / refused with the reason, the time of create, totals.
//
//	go run ./bench/corpus [-list docs/corpus.tsv] [-only xz-utils,redis] [-out docs/corpus.md]
//
// It needs root (apt-get, ptrace), deb-src entries and the archive.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"livesplice/internal/build"
	"livesplice/internal/procfs"
	"livesplice/internal/update"
)

// row is one upload of docs/corpus.tsv.
type row struct {
	Src, Old, New string
	Bins          []string
	Cmd           string
}

// fix is one Debian patch of an upload and what became of it.
type fix struct {
	Patch   string   `json:"patch"`
	CVEs    []string `json:"cves,omitempty"`
	Made    bool     `json:"made"`
	Applied bool     `json:"applied"`
	Undone  bool     `json:"undone"`
	Reason  string   `json:"reason,omitempty"`
	Funcs   int      `json:"functions,omitempty"`
	Nothing bool     `json:"nothing_to_do,omitempty"` // the patch changes no code of an installed file
	File    string   `json:"-"`
	ID      string   `json:"-"` // the made update's id (undo takes it)
}

// result is one upload's outcome.
type result struct {
	row
	Create time.Duration `json:"create"`
	Fixes  []fix         `json:"fixes"`
	Err    string        `json:"error,omitempty"` // the upload as a whole
}

func main() {
	list := flag.String("list", "docs/corpus.tsv", "the uploads")
	only := flag.String("only", "", "comma-separated source packages to run (default: all)")
	out := flag.String("out", "docs/corpus.md", "the report (Markdown); a .json beside it has the raw results")
	bin := flag.String("livesplice", "", "the livesplice binary (default: built from ./cmd/livesplice)")
	work := flag.String("work", "/var/tmp/livesplice-corpus", "work directory (kept: sources and builds are reused by nothing, but logs stay)")
	timeout := flag.Duration("timeout", 90*time.Minute, "per upload")
	flag.Parse()
	if err := run(*list, *only, *out, *bin, *work, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "corpus:", err)
		os.Exit(1)
	}
}

func run(list, only, out, bin, work string, timeout time.Duration) error {
	rows, err := readList(list)
	if err != nil {
		return err
	}
	if only != "" {
		want := map[string]bool{}
		for _, s := range strings.Split(only, ",") {
			want[s] = true
		}
		var kept []row
		for _, r := range rows {
			if want[r.Src] {
				kept = append(kept, r)
			}
		}
		rows = kept
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	if bin == "" {
		bin = filepath.Join(work, "livesplice")
		if o, err := exec.Command("go", "build", "-o", bin, "./cmd/livesplice").CombinedOutput(); err != nil {
			return fmt.Errorf("build livesplice: %v\n%s", err, o)
		}
	}
	hold := filepath.Join(work, "hold")
	if o, err := exec.Command("gcc", "-O2", "-o", hold, "bench/corpus/testdata/hold.c", "-ldl").CombinedOutput(); err != nil {
		return fmt.Errorf("build hold: %v\n%s", err, o)
	}
	// Earlier results of packages not run now are kept.
	prev := map[string]result{}
	jsonPath := strings.TrimSuffix(out, filepath.Ext(out)) + ".json"
	if b, err := os.ReadFile(jsonPath); err == nil {
		var rs []result
		if json.Unmarshal(b, &rs) == nil {
			for _, r := range rs {
				prev[r.Src] = r
			}
		}
	}
	for _, r := range rows {
		fmt.Fprintf(os.Stderr, "corpus: %s %s -> %s\n", r.Src, r.Old, r.New)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		res := one(ctx, r, bin, hold, filepath.Join(work, r.Src))
		cancel()
		prev[r.Src] = res
		fmt.Fprintf(os.Stderr, "corpus: %s: %s\n", r.Src, summary(res))
	}
	all := readOrder(list, prev)
	b, _ := json.MarshalIndent(all, "", "  ")
	if err := os.WriteFile(jsonPath, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return writeSection(out, markdown(all))
}

// The report is one section of docs/corpus.md, between these markers; the
// rest of the file (other corpora, measured by hand or by tests) is kept.
const (
	beginMark = "<!-- make corpus: begin (written by bench/corpus) -->"
	endMark   = "<!-- make corpus: end -->"
)

func writeSection(path, section string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(old)
	block := beginMark + "\n" + section + endMark + "\n"
	i, j := strings.Index(s, beginMark), strings.Index(s, endMark)
	switch {
	case i >= 0 && j > i:
		s = s[:i] + block + s[j+len(endMark):]
		s = strings.Replace(s, endMark+"\n\n", endMark+"\n", 1)
	case s == "":
		s = "# Corpus: updates for code nobody here wrote\n\n" + block
	default:
		s = strings.TrimRight(s, "\n") + "\n\n" + block
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

// readOrder returns the results in the list's order.
func readOrder(list string, by map[string]result) []result {
	rows, _ := readList(list)
	var out []result
	for _, r := range rows {
		if res, ok := by[r.Src]; ok {
			out = append(out, res)
		}
	}
	return out
}

func readList(path string) ([]row, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rows []row
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
			continue
		}
		c := strings.Split(line, "\t")
		if len(c) != 5 {
			return nil, fmt.Errorf("%s: %q: want 5 tab-separated columns", path, line)
		}
		rows = append(rows, row{Src: c[0], Old: c[1], New: c[2], Bins: strings.Split(c[3], ","), Cmd: c[4]})
	}
	return rows, sc.Err()
}

// one runs an upload end to end.
func one(ctx context.Context, r row, bin, hold, dir string) (res result) {
	res.row = r
	os.RemoveAll(dir)
	os.MkdirAll(dir, 0o755)
	logf, _ := os.Create(filepath.Join(dir, "log"))
	defer logf.Close()
	sh := func(name string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, name, args...)
		var b bytes.Buffer
		cmd.Stdout, cmd.Stderr = io.MultiWriter(&b, logf), io.MultiWriter(&b, logf)
		fmt.Fprintf(logf, "$ %s %s\n", name, strings.Join(args, " "))
		err := cmd.Run()
		return b.String(), err
	}
	install := func(v string) error {
		args := []string{"install", "-y", "-qq", "--allow-downgrades", "--no-install-recommends"}
		for _, b := range r.Bins {
			args = append(args, b+"="+v)
		}
		o, err := sh("apt-get", args...)
		if err != nil {
			return fmt.Errorf("apt-get install %s at %s: %v: %s", strings.Join(r.Bins, ","), v, err, strings.TrimSpace(build.LastLines(o, 1)))
		}
		return nil
	}
	if err := install(r.Old); err != nil {
		res.Err = err.Error()
		return res
	}
	defer func() {
		if err := install(r.New); err != nil && res.Err == "" {
			res.Err = err.Error()
		}
	}()

	p, err := start(r.Cmd, hold, logf)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer p.stop()

	out := filepath.Join(dir, "updates")
	t0 := time.Now()
	o, err := sh(bin, "create", "--deb", r.Src, "--version", r.Old, "--to", r.New, "--split", "-o", out)
	res.Create = time.Since(t0).Round(time.Second)
	res.Fixes = splitReport(o)
	if err != nil && len(res.Fixes) == 0 {
		res.Err = "create: " + strings.TrimSpace(build.LastLines(o, 1))
		return res
	}
	// Apply in order, then undo in reverse.
	var applied []int
	for i := range res.Fixes {
		f := &res.Fixes[i]
		if !f.Made {
			continue
		}
		if procfs.Exiting(p.pid()) {
			f.Reason = "the process died before this apply"
			break
		}
		o, err := sh(bin, "apply", "--pid", fmt.Sprint(p.pid()), f.File)
		if err != nil {
			f.Reason = "apply: " + strings.TrimSpace(build.LastLines(o, 1))
			continue
		}
		f.Applied = true
		applied = append(applied, i)
	}
	for j := len(applied) - 1; j >= 0; j-- {
		f := &res.Fixes[applied[j]]
		o, err := sh(bin, "undo", "--pid", fmt.Sprint(p.pid()), f.ID)
		if err != nil {
			f.Reason = "undo: " + strings.TrimSpace(build.LastLines(o, 1))
			continue
		}
		f.Undone = true
	}
	if procfs.Exiting(p.pid()) {
		res.Err = "the process died during apply or undo"
	}
	return res
}

// splitReport reads create --split's lines, one per patch of the new
// version (internal/cli deb.go):
//
//	made DIR/ID.lsu: debian/patches/NAME (CVE-...), requires ID
//	not made: debian/patches/NAME (CVE-...): REASON
//	nothing to do: debian/patches/NAME (CVE-...): WHY
//	not made: REASON                  (code changes no added patch makes)
//
// A patch with nothing to do is counted apart from the fixes that change
// code (markdown's "nothing to do" column); its row keeps the reason.
func splitReport(output string) []fix {
	var fixes []fix
	for _, line := range strings.Split(output, "\n") {
		var f fix
		switch {
		case strings.HasPrefix(line, "made "):
			path, rest, ok := strings.Cut(strings.TrimPrefix(line, "made "), ": ")
			if !ok {
				continue
			}
			f = patchFix(rest)
			f.Made, f.File = true, path
			f.ID, f.Funcs = readUpdate(path)
		case strings.HasPrefix(line, "not made: debian/patches/"):
			f = patchFix(strings.TrimPrefix(line, "not made: "))
		case strings.HasPrefix(line, "not made: "):
			f = fix{Patch: "(rest)", Reason: strings.TrimPrefix(line, "not made: ")}
		case strings.HasPrefix(line, "nothing to do: debian/patches/"):
			f = patchFix(strings.TrimPrefix(line, "nothing to do: "))
			f.Nothing = true
		default:
			continue
		}
		fixes = append(fixes, f)
	}
	return fixes
}

// patchFix parses "debian/patches/NAME (CVE-1 CVE-2)[, requires ID][: REASON]".
func patchFix(s string) fix {
	s = strings.TrimPrefix(s, "debian/patches/")
	var f fix
	name, rest, _ := strings.Cut(s, " ")
	if i := strings.Index(name, ":"); i >= 0 { // no CVEs: "NAME: REASON"
		name, rest = name[:i], strings.TrimSpace(s[i+1:])
		f.Reason = rest
		f.Patch = name
		return f
	}
	f.Patch = strings.TrimSuffix(strings.TrimSuffix(name, ","), ":")
	if strings.HasPrefix(rest, "(") {
		if k := strings.Index(rest, ")"); k > 0 {
			f.CVEs = strings.Fields(rest[1:k])
			rest = rest[k+1:]
		}
	}
	if _, reason, ok := strings.Cut(rest, ": "); ok {
		f.Reason = reason
	}
	return f
}

// readUpdate reads a made update's id and the number of functions it
// replaces or adds; an update it cannot read keeps the id its file is
// named by (create names it ID.lsu), and 0.
func readUpdate(file string) (id string, funcs int) {
	u, err := update.ReadFile(file)
	if err != nil {
		return strings.TrimSuffix(filepath.Base(file), ".lsu"), 0
	}
	for _, t := range u.Targets {
		funcs += len(t.Functions)
	}
	return u.ID, funcs
}

// proc is the corpus process of an upload.
type proc struct{ cmd *exec.Cmd }

func start(command, hold string, log io.Writer) (*proc, error) {
	if rest, ok := strings.CutPrefix(command, "hold "); ok {
		command = hold + " " + rest
	}
	cmd := exec.Command("sh", "-c", "exec "+command)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", command, err)
	}
	p := &proc{cmd}
	time.Sleep(2 * time.Second) // the loader has mapped it, a daemon has set up
	if procfs.Exiting(p.pid()) {
		p.stop()
		return nil, fmt.Errorf("%s exited at start (see the log)", command)
	}
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) stop() {
	p.cmd.Process.Kill()
	p.cmd.Wait()
}

func summary(r result) string {
	if r.Err != "" {
		return "error: " + r.Err
	}
	made, applied, undone := 0, 0, 0
	for _, f := range r.Fixes {
		made += btoi(f.Made)
		applied += btoi(f.Applied)
		undone += btoi(f.Undone)
	}
	return fmt.Sprintf("%d fixes: made %d, applied %d, undone %d (create %v)", len(r.Fixes), made, applied, undone, r.Create)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func markdown(all []result) string {
	var b strings.Builder
	b.WriteString("## Debian security uploads (make corpus)\n\n")
	b.WriteString("Made by `make corpus` (bench/corpus over docs/corpus.tsv; raw results in docs/corpus.json). ")
	b.WriteString("For each upload: the old binary packages installed, a process mapping or running the shipped object, ")
	b.WriteString("`create --deb SRC --version OLD --to NEW --split`, each made update applied to the process in order, ")
	b.WriteString("undone in reverse, the newer version reinstalled. A fix is a patch the newer version adds to ")
	b.WriteString("debian/patches; \"nothing to do\" ones (no code of an installed file changes) are counted apart, ")
	b.WriteString("every other one is a fix that changes runtime code.\n\n")
	var fixes, nothing, made, applied, undone int
	b.WriteString("| package | old -> new | fixes changing code | nothing to do | made | applied | undone | create | note |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range all {
		n, m, a, u, z := 0, 0, 0, 0, 0
		for _, f := range r.Fixes {
			if f.Nothing {
				z++
				continue
			}
			n++
			m += btoi(f.Made)
			a += btoi(f.Applied)
			u += btoi(f.Undone)
		}
		fixes, nothing, made, applied, undone = fixes+n, nothing+z, made+m, applied+a, undone+u
		fmt.Fprintf(&b, "| %s | %s -> %s | %d | %d | %d | %d | %d | %v | %s |\n", r.Src, r.Old, r.New, n, z, m, a, u, r.Create, cell(r.Err))
	}
	fmt.Fprintf(&b, "| **total** | | %d | %d | %d | %d | %d | | |\n\n", fixes, nothing, made, applied, undone)
	b.WriteString("### Per fix\n\n| package | Debian patch | CVEs | outcome | functions | reason |\n|---|---|---|---|---|---|\n")
	for _, r := range all {
		for _, f := range r.Fixes {
			outcome := "refused"
			switch {
			case f.Nothing:
				outcome = "nothing to do"
			case f.Undone:
				outcome = "made, applied, undone"
			case f.Applied:
				outcome = "made, applied"
			case f.Made:
				outcome = "made"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %d | %s |\n", r.Src, f.Patch, strings.Join(f.CVEs, " "), outcome, f.Funcs, cell(f.Reason))
		}
	}
	return b.String()
}

func cell(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", "\\|"), "\n", " ") }
