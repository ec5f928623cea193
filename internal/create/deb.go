package create

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"livesplice/internal/build"
	"livesplice/internal/deb"
	"livesplice/internal/elfsym"
	"livesplice/internal/update"
)

// ErrNothingToDo is returned by CreateDeb with To set when the newer
// version changes no code that Debian's build compiles into the files.
var ErrNothingToDo = errors.New("nothing to do")

// DebOptions are the inputs of create --deb.
type DebOptions struct {
	Package  string // source package
	Version  string // its version; default: the installed one (which it must be)
	Patch    string // the fix, or
	To       string // a newer version of the package: its code changes are the fix
	ID       string // default: the patch's name, or PACKAGE-TO
	Self     string
	Progress io.Writer // step lines (a terminal), or nil
	Log      io.Writer // notes the caller must see (packages skipped, ...), or nil
	KeepWork bool
}

// note writes one line to o.Log.
func (o *DebOptions) note(format string, a ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, "livesplice: "+format+"\n", a...)
	}
}

// debRun is what the updates of one create --deb share: the installed
// files, the sources, Debian's build of the installed version and which
// of its outputs each installed file is.
type debRun struct {
	o         *DebOptions
	p         debProgress
	version   string   // installed
	files     []string // installed ELF files
	work      string
	tree      string // the installed version's source
	newTree   string // the --to version's source, if any
	pre       *build.Tree
	rec       map[string]deb.Recovered
	shippedAs map[string][]string // build output -> installed files it is
}

// fetch finds the installed files and fetches the installed version's
// source (and --to's) into a work directory; the caller calls cleanup.
func (o *DebOptions) fetch(ctx context.Context) (d *debRun, cleanup func(), err error) {
	inst, err := deb.Installed(ctx, o.Package, o.Version)
	if err != nil {
		return nil, nil, err
	}
	for _, b := range inst.Skipped {
		o.note("skipped %s %s: installed at another version than %s", b.Package, b.Version, inst.Version)
	}
	work, err := os.MkdirTemp("", "livesplice-deb-")
	if err != nil {
		return nil, nil, err
	}
	cleanup = func() { os.RemoveAll(work) }
	if o.KeepWork {
		fmt.Fprintf(os.Stderr, "livesplice: keeping build trees in %s\n", work)
		cleanup = func() {}
	}
	d = &debRun{o: o, p: debProgress{o.Progress}, version: inst.Version, files: inst.Files, work: work}
	start := d.p.start(fmt.Sprintf("fetching %s %s", o.Package, d.version))
	if d.tree, err = deb.Fetch(ctx, o.Package, d.version, filepath.Join(work, "src")); err != nil {
		cleanup()
		return nil, nil, err
	}
	d.p.done("fetched "+o.Package+" "+d.version, start)
	if o.To != "" {
		start := d.p.start(fmt.Sprintf("fetching %s %s", o.Package, o.To))
		if d.newTree, err = deb.Fetch(ctx, o.Package, o.To, filepath.Join(work, "src-new")); err != nil {
			cleanup()
			return nil, nil, err
		}
		d.p.done("fetched "+o.Package+" "+o.To, start)
	}
	return d, cleanup, nil
}

// build installs the build dependencies, builds the installed version
// once as Debian does (its linked files give the symbol tables of the
// installed ones) and matches each installed file to the output it is.
func (d *debRun) build(ctx context.Context) error {
	o, p := d.o, d.p
	start := p.start("checking build dependencies")
	if err := deb.BuildDeps(ctx, d.tree); err != nil {
		return err
	}
	p.done("checked build dependencies", start)
	bdir := filepath.Join(d.work, "build")
	if err := os.MkdirAll(bdir, 0o755); err != nil {
		return err
	}
	// A clean environment, as Debian's build daemons have (deb.CleanEnv).
	home := filepath.Join(d.work, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		return err
	}
	start = p.start("building " + o.Package + " " + d.version + " as Debian does")
	pre, err := build.RunPlain(ctx, build.Options{Src: d.tree, BuildCmd: deb.BuildCmd, WorkDir: bdir, Self: o.Self, Progress: o.Progress, Env: deb.CleanEnv(home)})
	if err != nil {
		return err
	}
	d.pre = pre
	p.done("built "+o.Package+" "+d.version, start)
	// Which output each installed file is: by build-id, then code, then
	// name (deb.MatchOutputs). A file none is could hold the fix unseen.
	var rels []string
	for _, out := range pre.Outputs {
		rels = append(rels, out.Rel)
	}
	matched, unmatched, err := deb.MatchOutputs(pre.Root, rels, d.files)
	if err != nil {
		return err
	}
	if len(unmatched) > 0 {
		var why []string
		for _, inst := range d.files {
			if r, ok := unmatched[inst]; ok {
				why = append(why, inst+": "+r)
			}
		}
		return fmt.Errorf("create --deb %s: cannot tell whether the fix changes every installed file: %s", o.Package, strings.Join(why, "; "))
	}
	d.shippedAs = map[string][]string{}
	outputOf := map[string]string{}
	for _, inst := range d.files {
		m := matched[inst]
		d.shippedAs[m.Output] = append(d.shippedAs[m.Output], inst)
		outputOf[inst] = m.Output
		if filepath.Base(m.Output) != filepath.Base(inst) || m.By == "name" {
			p.line(fmt.Sprintf("%s is the build's %s (same %s)", inst, m.Output, m.By))
		}
	}
	// The symbols of each installed file come from the output it is, not
	// from one of its name (redis ships src/redis-server as redis-check-rdb).
	start = p.start("recovering the symbols of the installed files")
	if d.rec, err = deb.RecoverTree(pre, d.files, outputOf); err != nil {
		return err
	}
	p.done("recovered symbols", start)
	return nil
}

// update makes the update of patchFile over pre (the plain build, or a
// clone of it): the units the fix affects compiled again pre and post
// (build.Recompile), targets keyed by the installed files' build-ids. An
// update without targets is the proof that the fix changes no installed
// file (reachesNoInstalled).
func (d *debRun) update(ctx context.Context, pre *build.Tree, id, patchFile string, patch []byte) (*update.File, error) {
	start := d.p.start("recompiling the units the fix affects")
	res, err := build.Recompile(ctx, pre, build.RecompileOptions{
		Patch:    patchFile,
		Progress: d.o.Progress,
		// Only outputs that are installed files are diffed below.
		Outputs: func(rel string) bool { return d.shippedAs[rel] != nil },
	})
	if err != nil {
		return nil, err
	}
	d.p.done("recompiled the units the fix affects", start)
	if err := reachesNoInstalled(ctx, res); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(patch)
	f := &update.File{ID: id, Kind: update.KindProcess, Patch: hex.EncodeToString(sum[:])}
	preObj := map[string]bool{}
	for _, ob := range res.Pre.Objects {
		preObj[ob.Rel] = true
	}
	outs := make([]string, 0, len(d.shippedAs))
	for rel := range d.shippedAs {
		outs = append(outs, rel)
	}
	sort.Strings(outs)
	for _, rel := range outs {
		pre, post := outputRel(res.Pre, rel), outputRel(res.Post, rel)
		if pre == nil || post == nil {
			return nil, fmt.Errorf("%s: the build's output %s is missing from the recompiled trees", strings.Join(d.shippedAs[rel], ", "), rel)
		}
		t, err := diffOutput(ctx, res, *pre, *post, preObj, d.work, d.o.Progress)
		if err != nil {
			return nil, fmt.Errorf("%s (%s): %w", strings.Join(d.shippedAs[rel], ", "), rel, err)
		}
		if t == nil {
			continue
		}
		// One target per build-id: copies of one file (one build-id) are
		// one target, found by its build-id whatever the name mapped.
		seen := map[string]bool{}
		for _, inst := range d.shippedAs[rel] {
			tg := *t
			if err := debTarget(&tg, inst, d.rec[inst]); err != nil {
				return nil, err
			}
			if seen[tg.PreBuildID] {
				continue
			}
			seen[tg.PreBuildID] = true
			f.Targets = append(f.Targets, tg)
		}
	}
	return f, nil
}

// CreateDeb builds an update for the files a Debian source package's
// installed binary packages ship (docs/deb.md): the source through apt,
// built once the way Debian builds it (build.RunPlain), the units the fix
// affects compiled again pre and post (build.Recompile), targets keyed by
// the installed files' build-ids, with their symbol tables recovered from
// the plain build's linked files when their code is identical.
func CreateDeb(ctx context.Context, o DebOptions) (*update.File, error) {
	if (o.Patch == "") == (o.To == "") {
		return nil, errors.New("create --deb: give a PATCH or --to NEWVERSION, not both")
	}
	if o.ID == "" {
		if o.Patch != "" {
			o.ID = DefaultID(o.Patch)
		} else {
			o.ID = sanitizeID(o.Package + "-" + o.To)
		}
	}
	if err := checkID(o.ID); err != nil {
		return nil, err
	}
	var patch []byte
	if o.Patch != "" {
		var err error
		if patch, err = os.ReadFile(o.Patch); err != nil {
			return nil, fmt.Errorf("read patch: %w", err)
		}
	}
	d, cleanup, err := o.fetch(ctx)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	patchFile := o.Patch
	if o.To != "" {
		if patch, err = deb.CodeDiff(d.tree, d.newTree); err != nil {
			return nil, err
		}
		if len(patch) == 0 {
			return nil, fmt.Errorf("%w: %s %s changes no code of %s", ErrNothingToDo, o.Package, o.To, d.version)
		}
		patchFile = filepath.Join(d.work, "fix.patch")
		if err := os.WriteFile(patchFile, patch, 0o644); err != nil {
			return nil, err
		}
	}
	if err := d.build(ctx); err != nil {
		return nil, err
	}
	f, err := d.update(ctx, d.pre, o.ID, patchFile, patch)
	if err != nil {
		return nil, err
	}
	if len(f.Targets) == 0 {
		if o.To != "" {
			return nil, fmt.Errorf("%w: the code changes of %s %s compile to nothing in the installed files", ErrNothingToDo, o.Package, o.To)
		}
		return nil, fmt.Errorf("%s: %w (nothing to splice into %s)", o.Patch, ErrNoChange, strings.Join(d.files, ", "))
	}
	f.Debian = &update.Debian{Source: o.Package, From: d.version, To: o.To}
	return f, nil
}

// reachesNoInstalled checks what "no change" needs to be a proof: every
// changed code file that no unit of an installed file reads is compiled
// by no unit, or only by units linked into outputs that are not installed
// files; a unit linked into no output the build log shows (a static
// library, or a link that bypassed the compiler wrapper) could be in an
// installed file unseen, and is refused, naming it.
func reachesNoInstalled(ctx context.Context, res *build.Result) error {
	var code []string
	for _, f := range res.Unread {
		if deb.IsCode(f) {
			code = append(code, f)
		}
	}
	if len(code) == 0 {
		return nil
	}
	readers, err := res.Readers(ctx, code)
	if err != nil {
		return err
	}
	var bad []string
	for _, r := range readers {
		if len(r.Outputs) == 0 {
			bad = append(bad, fmt.Sprintf("%s is compiled into %s, which no file the build linked holds (a static library, or a link livesplice did not see)", r.File, r.Unit))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("cannot prove that the fix reaches no installed file: %s", strings.Join(bad, "; "))
	}
	return nil
}

// outputRel is the linked output of a tree at rel.
func outputRel(t *build.Tree, rel string) *build.Output {
	for i := range t.Outputs {
		if t.Outputs[i].Rel == rel {
			return &t.Outputs[i]
		}
	}
	return nil
}

// debTarget makes a target built from the pre tree's output name the
// installed file: its path, soname and build-id, and the symbol table the
// plain build recovered for it. Without one, an update that needs a static
// symbol of the file is refused here, naming it: apply could not prove
// where it runs.
func debTarget(t *update.Target, inst string, rec deb.Recovered) error {
	fh, err := os.Open(inst)
	if err != nil {
		return err
	}
	defer fh.Close()
	tab, err := elfsym.Load(fh)
	if err != nil {
		return fmt.Errorf("%s: %w", inst, err)
	}
	if tab.BuildID == "" {
		return fmt.Errorf("%s has no GNU build-id", inst)
	}
	t.Path, t.Soname, t.PreBuildID = inst, tab.Soname, tab.BuildID
	if rec.Symtab != nil {
		if rec.Symtab.BuildID != tab.BuildID {
			return fmt.Errorf("%s: symbols recovered for build-id %s, the file has %s", inst, rec.Symtab.BuildID, tab.BuildID)
		}
		t.Symtab = rec.Symtab
		return rec.Check(inst, t, func(name string) bool { return len(tab.Global(name)) > 0 })
	}
	if !tab.Stripped {
		return nil
	}
	// Name a replaced static function if there is one: that is what the
	// fix is about; else any static symbol the new code refers to.
	var need []string
	for _, fn := range t.Functions {
		if fn.Status == update.StatusReplaced && t.Symbols[fn.Symbol].Kind == update.SymLocal {
			need = append(need, fn.Name)
		}
	}
	for _, y := range t.Symbols {
		if len(need) == 0 && y.Kind == update.SymLocal {
			need = append(need, y.Name)
		}
	}
	if len(need) > 0 {
		return fmt.Errorf("%s is stripped and its symbols could not be recovered (%s): the update needs its static %s", inst, rec.Reason, strings.Join(need, ", "))
	}
	return nil
}

// sanitizeID turns a package name and version into an update id.
func sanitizeID(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			b[i] = '_'
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

// debProgress reports create --deb's own steps like build's.
type debProgress struct{ w io.Writer }

func (p debProgress) start(what string) time.Time {
	if p.w != nil {
		fmt.Fprintf(p.w, "%s...\n", what)
	}
	return time.Now()
}

func (p debProgress) done(what string, start time.Time) {
	if p.w != nil {
		fmt.Fprintf(p.w, "%s in %.1fs\n", what, time.Since(start).Seconds())
	}
}

func (p debProgress) line(s string) {
	if p.w != nil {
		fmt.Fprintln(p.w, s)
	}
}
