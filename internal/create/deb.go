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
	Progress io.Writer
	KeepWork bool
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
	version, pkgs, err := deb.Installed(ctx, o.Package)
	if err != nil {
		return nil, err
	}
	if o.Version != "" && o.Version != version {
		return nil, fmt.Errorf("source package %s: version %s is installed, not %s: the update patches the installed files", o.Package, version, o.Version)
	}
	files, err := deb.Files(ctx, pkgs)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("the installed packages of %s (%s) ship no ELF file", o.Package, strings.Join(pkgs, ", "))
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
	rec, err := deb.RecoverTree(pre, files)
	if err != nil {
		return nil, err
	}
	p.done("recovered symbols", start)
	start = p.start("recompiling the units the fix affects")
	shipped := map[string]bool{}
	for _, f := range files {
		shipped[filepath.Base(f)] = true
	}
	res, err := build.Recompile(ctx, pre, build.RecompileOptions{
		Patch:    patchFile,
		Progress: o.Progress,
		// Only outputs named as an installed file are diffed below.
		Outputs: func(rel string) bool { return shipped[filepath.Base(rel)] },
	})
	if err != nil {
		return nil, err
	}
	p.done("recompiled the units the fix affects", start)

	sum := sha256.Sum256(patch)
	f := &update.File{ID: o.ID, Kind: update.KindProcess, Patch: hex.EncodeToString(sum[:])}
	preObj := map[string]bool{}
	for _, ob := range res.Pre.Objects {
		preObj[ob.Rel] = true
	}
	for _, inst := range files {
		pre, err := outputNamed(res.Pre, filepath.Base(inst))
		if err != nil || pre == nil {
			if err != nil {
				return nil, err
			}
			continue // not built by the arch-dependent build: not ours to patch
		}
		post, err := outputNamed(res.Post, filepath.Base(inst))
		if err != nil || post == nil || post.Rel != pre.Rel {
			return nil, fmt.Errorf("%s: the post build did not link %s again", inst, pre.Rel)
		}
		t, err := diffOutput(res, *pre, *post, preObj, work)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", inst, err)
		}
		if t == nil {
			continue
		}
		if err := debTarget(t, inst, rec[inst]); err != nil {
			return nil, err
		}
		f.Targets = append(f.Targets, *t)
	}
	if len(f.Targets) == 0 {
		if o.To != "" {
			return nil, fmt.Errorf("%w: the code changes of %s %s compile to nothing in the installed files", ErrNothingToDo, o.Package, o.To)
		}
		return nil, fmt.Errorf("%s: %w (nothing to splice into %s)", o.Patch, ErrNoChange, strings.Join(files, ", "))
	}
	return f, nil
}

// outputNamed finds the one linked output of a tree with base name base.
func outputNamed(t *build.Tree, base string) (*build.Output, error) {
	var found []*build.Output
	for i := range t.Outputs {
		if filepath.Base(t.Outputs[i].Rel) == base {
			found = append(found, &t.Outputs[i])
		}
	}
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("the build links %d files named %s: cannot tell which one is installed", len(found), base)
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
