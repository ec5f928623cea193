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
	inst, err := deb.Installed(ctx, o.Package, o.Version)
	if err != nil {
		return nil, err
	}
	version, files := inst.Version, inst.Files
	for _, b := range inst.Skipped {
		o.note("skipped %s %s: installed at another version than %s", b.Package, b.Version, version)
	}

	work, err := os.MkdirTemp("", "livesplice-deb-")
	if err != nil {
		return nil, err
	}
	if o.KeepWork {
		fmt.Fprintf(os.Stderr, "livesplice: keeping build trees in %s\n", work)
	} else {
		defer os.RemoveAll(work)
	}
	p := debProgress{o.Progress}
	start := p.start(fmt.Sprintf("fetching %s %s", o.Package, version))
	tree, err := deb.Fetch(ctx, o.Package, version, filepath.Join(work, "src"))
	if err != nil {
		return nil, err
	}
	p.done("fetched "+o.Package+" "+version, start)
	patchFile := o.Patch
	if o.To != "" {
		start := p.start(fmt.Sprintf("fetching %s %s", o.Package, o.To))
		newTree, err := deb.Fetch(ctx, o.Package, o.To, filepath.Join(work, "src-new"))
		if err != nil {
			return nil, err
		}
		p.done("fetched "+o.Package+" "+o.To, start)
		if patch, err = deb.CodeDiff(tree, newTree); err != nil {
			return nil, err
		}
		if len(patch) == 0 {
			return nil, fmt.Errorf("%w: %s %s changes no code of %s", ErrNothingToDo, o.Package, o.To, version)
		}
		patchFile = filepath.Join(work, "fix.patch")
		if err := os.WriteFile(patchFile, patch, 0o644); err != nil {
			return nil, err
		}
	}
	start = p.start("checking build dependencies")
	if err := deb.BuildDeps(ctx, tree); err != nil {
		return nil, err
	}
	p.done("checked build dependencies", start)

	// One build, Debian's own (its linked files give the symbol tables of
	// the shipped ones), then only the units the fix affects compiled
	// again, pre and post, for the differ.
	bdir := filepath.Join(work, "build")
	if err := os.MkdirAll(bdir, 0o755); err != nil {
		return nil, err
	}
	start = p.start("building " + o.Package + " " + version + " as Debian does")
	pre, err := build.RunPlain(ctx, build.Options{Src: tree, BuildCmd: deb.BuildCmd, WorkDir: bdir, Self: o.Self, Progress: o.Progress})
	if err != nil {
		return nil, err
	}
	p.done("built "+o.Package+" "+version, start)
	start = p.start("recovering the symbols of the installed files")
	rec, err := deb.Recover(pre.Root, files)
	if err != nil {
		return nil, err
	}
	p.done("recovered symbols", start)
	// Which output each installed file is: by build-id, then code, then
	// name (deb.MatchOutputs). A file none is could hold the fix unseen.
	var rels []string
	for _, out := range pre.Outputs {
		rels = append(rels, out.Rel)
	}
	matched, unmatched, err := deb.MatchOutputs(pre.Root, rels, files)
	if err != nil {
		return nil, err
	}
	if len(unmatched) > 0 {
		var why []string
		for _, inst := range files {
			if r, ok := unmatched[inst]; ok {
				why = append(why, inst+": "+r)
			}
		}
		return nil, fmt.Errorf("create --deb %s: cannot tell whether the fix changes every installed file: %s", o.Package, strings.Join(why, "; "))
	}
	shippedAs := map[string][]string{} // output -> installed files it is
	for _, inst := range files {
		m := matched[inst]
		shippedAs[m.Output] = append(shippedAs[m.Output], inst)
		if filepath.Base(m.Output) != filepath.Base(inst) || m.By == "name" {
			p.line(fmt.Sprintf("%s is the build's %s (same %s)", inst, m.Output, m.By))
		}
	}
	start = p.start("recompiling the units the fix affects")
	res, err := build.Recompile(ctx, pre, build.RecompileOptions{
		Patch:    patchFile,
		Progress: o.Progress,
		// Only outputs that are installed files are diffed below.
		Outputs: func(rel string) bool { return shippedAs[rel] != nil },
	})
	if err != nil {
		return nil, err
	}
	p.done("recompiled the units the fix affects", start)
	if err := reachesNoInstalled(ctx, res); err != nil {
		return nil, err
	}

	sum := sha256.Sum256(patch)
	f := &update.File{ID: o.ID, Kind: update.KindProcess, Patch: hex.EncodeToString(sum[:])}
	preObj := map[string]bool{}
	for _, ob := range res.Pre.Objects {
		preObj[ob.Rel] = true
	}
	outs := make([]string, 0, len(shippedAs))
	for rel := range shippedAs {
		outs = append(outs, rel)
	}
	sort.Strings(outs)
	for _, rel := range outs {
		pre, post := outputRel(res.Pre, rel), outputRel(res.Post, rel)
		if pre == nil || post == nil {
			return nil, fmt.Errorf("%s: the build's output %s is missing from the recompiled trees", strings.Join(shippedAs[rel], ", "), rel)
		}
		t, err := diffOutput(res, *pre, *post, preObj, work)
		if err != nil {
			return nil, fmt.Errorf("%s (%s): %w", strings.Join(shippedAs[rel], ", "), rel, err)
		}
		if t == nil {
			continue
		}
		// One target per build-id: copies of one file (one build-id) are
		// one target, found by its build-id whatever the name mapped.
		seen := map[string]bool{}
		for _, inst := range shippedAs[rel] {
			tg := *t
			if err := debTarget(&tg, inst, rec[inst]); err != nil {
				return nil, err
			}
			if seen[tg.PreBuildID] {
				continue
			}
			seen[tg.PreBuildID] = true
			f.Targets = append(f.Targets, tg)
		}
	}
	if len(f.Targets) == 0 {
		if o.To != "" {
			return nil, fmt.Errorf("%w: the code changes of %s %s compile to nothing in the installed files", ErrNothingToDo, o.Package, o.To)
		}
		return nil, fmt.Errorf("%s: %w (nothing to splice into %s)", o.Patch, ErrNoChange, strings.Join(files, ", "))
	}
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
		return nil
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
