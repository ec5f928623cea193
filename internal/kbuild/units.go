package kbuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"livesplice/internal/build"
)

// MaxUnits bounds how many units a patch may make create compile: a changed
// header included everywhere would amount to a kernel build.
const MaxUnits = 40

// ErrUnsupported is wrapped by refusals of patches create cannot rebuild.
var ErrUnsupported = errors.New("patch cannot be built as a kernel update")

// Unit is one compiled translation unit, pre and post.
type Unit struct {
	Rel    string // object path relative to the tree, e.g. fs/proc/cmdline.o
	Source string // its source, e.g. fs/proc/cmdline.c
	Object string // the kernel object it is linked into: "vmlinux" or a module name
	Pre    []byte
	Post   []byte
}

// Units lists the objects to compile for the files a patch touches: a
// changed .c or .S file is its own unit; a changed header makes a unit of
// every .c file that includes it by name (direct includes only). Units
// found through a header are optional: one this config does not build may
// not compile, and is then left out.
func (t *Tree) Units(ctx context.Context, files []string) (units []string, optional map[string]bool, err error) {
	set := map[string]bool{} // unit -> required
	for _, f := range files {
		switch ext := filepath.Ext(f); {
		case ext == ".c" || ext == ".S":
			if _, err := os.Stat(filepath.Join(t.viewDir(), f)); err != nil {
				continue // a new or deleted file: no pre unit to replace (a new file's code must be reached from a changed one)
			}
			set[strings.TrimSuffix(f, ext)+".o"] = true
		case ext == ".h":
			us, err := t.includers(ctx, f)
			if err != nil {
				return nil, nil, err
			}
			for _, u := range us {
				set[u] = set[u] || false
			}
		case strings.HasPrefix(f, "Documentation/") || strings.HasPrefix(f, "tools/") || strings.HasPrefix(f, "samples/"):
		default:
			return nil, nil, fmt.Errorf("%s: %w: only .c, .S and .h files can change (a Makefile or Kconfig change needs a new kernel)", f, ErrUnsupported)
		}
	}
	if len(set) > MaxUnits {
		return nil, nil, fmt.Errorf("%w: the patch affects %d translation units (at most %d are compiled; a widely included header changed?)", ErrUnsupported, len(set), MaxUnits)
	}
	optional = map[string]bool{}
	for u, required := range set {
		units = append(units, u)
		if !required {
			optional[u] = true
		}
	}
	sort.Strings(units)
	if len(units) == 0 {
		return nil, nil, fmt.Errorf("%w: the patch changes no compiled file", ErrUnsupported)
	}
	return units, optional, nil
}

// includers finds the .c files that include header h by name: <a/b.h> for
// headers under an include directory, "b.h" for local ones (same directory).
func (t *Tree) includers(ctx context.Context, h string) ([]string, error) {
	name, dir := "", t.viewDir()
	if i := strings.Index(h, "include/"); i >= 0 && (i == 0 || strings.HasPrefix(h, "arch/")) {
		name = strings.TrimPrefix(h[i+len("include/"):], "uapi/")
	} else {
		name, dir = filepath.Base(h), filepath.Join(t.viewDir(), filepath.Dir(h))
	}
	pat := `^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]` + regexp.QuoteMeta(name) + `[>"]`
	cmd := exec.CommandContext(ctx, "grep", "-rlE", "--include=*.c", pat, ".")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 1 {
			return nil, nil // no includer
		}
		return nil, fmt.Errorf("search includers of %s: %w", h, err)
	}
	var units []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l == "" {
			continue
		}
		rel, err := filepath.Rel(t.viewDir(), filepath.Join(dir, l))
		if err != nil || strings.HasPrefix(rel, "tools/") || strings.HasPrefix(rel, "scripts/") || strings.HasPrefix(rel, "samples/") || strings.HasPrefix(rel, "Documentation/") {
			continue
		}
		units = append(units, strings.TrimSuffix(rel, ".c")+".o")
	}
	return units, nil
}

// Compile builds units pre (in the cached tree, whose objects double as a
// cache of pre builds) and post (the patch applied in an overlay of the
// source, objects written to an overlay of the cached tree, both in a
// private mount namespace), and returns the objects. work is an empty
// scratch directory. extra files (paths relative to the source) are added
// to the post source before the patch is applied. An optional unit whose
// pre compile fails is left out.
func (t *Tree) Compile(ctx context.Context, units []string, optional map[string]bool, patchFile, work string, extra map[string][]byte) ([]Unit, error) {
	unlock, err := lock(t.Out + ".lock")
	if err != nil {
		return nil, err
	}
	defer unlock()
	var stale []string
	for _, u := range units {
		if !t.preUpToDate(u) {
			stale = append(stale, u)
		}
	}
	if len(stale) > 0 {
		if err := t.make(ctx, append([]string{"-k", fmt.Sprintf("-j%d", t.jobs)}, stale...)...); err != nil {
			var kept []string
			for _, u := range units {
				if _, serr := os.Stat(filepath.Join(t.Out, u)); serr == nil {
					kept = append(kept, u)
				} else if optional[u] {
					t.logf("%s does not compile in this configuration (not built by it?): left out", u)
				} else {
					return nil, fmt.Errorf("compile pre units: %w", err)
				}
			}
			if len(kept) == 0 {
				return nil, fmt.Errorf("compile pre units: %w", err)
			}
			units = kept
		}
	}
	// With another source's prepared tree, the units that read a file
	// this source changed are compiled again with this source mounted over
	// the prepared one (objects in an overlay, the cache stays the
	// prepared source's).
	preDir := map[string]string{}
	if t.View != "" {
		var view []string
		for _, u := range units {
			if t.readsChanged(u) {
				view = append(view, u)
			}
		}
		if len(view) > 0 {
			upper, err := t.compileIn(ctx, view, "", filepath.Join(work, "pre"), extra)
			if err != nil {
				return nil, fmt.Errorf("compile pre units from %s: %w", t.View, err)
			}
			for _, u := range view {
				preDir[u] = upper
			}
		}
	}
	var res []Unit
	for _, u := range units {
		dir := t.Out
		if d, ok := preDir[u]; ok {
			dir = d
		}
		pre, err := os.ReadFile(filepath.Join(dir, u))
		if err != nil {
			return nil, fmt.Errorf("pre unit %s: %w", u, err)
		}
		obj, err := t.linkedInto(u)
		if err != nil {
			return nil, err
		}
		res = append(res, Unit{Rel: u, Source: t.source(u), Object: obj, Pre: pre})
	}
	upper, err := t.compileIn(ctx, units, patchFile, filepath.Join(work, "post"), extra)
	if err != nil {
		return nil, err
	}
	for i := range res {
		if res[i].Post, err = os.ReadFile(filepath.Join(upper, res[i].Rel)); err != nil {
			return nil, fmt.Errorf("post unit %s: %w", res[i].Rel, err)
		}
	}
	return res, nil
}

func (t *Tree) source(u string) string {
	base := strings.TrimSuffix(u, ".o")
	if _, err := os.Stat(filepath.Join(t.viewDir(), base+".S")); err == nil {
		return base + ".S"
	}
	return base + ".c"
}

var modName = regexp.MustCompile(`-DKBUILD_MODNAME='"([A-Za-z0-9_-]+)"'`)

// linkedInto reads the unit's kbuild command file: a unit compiled with
// -DMODULE goes into the module KBUILD_MODNAME names, others into vmlinux.
func (t *Tree) linkedInto(u string) (string, error) {
	cmdFile := filepath.Join(t.Out, filepath.Dir(u), "."+filepath.Base(u)+".cmd")
	b, err := os.ReadFile(cmdFile)
	if err != nil {
		return "", fmt.Errorf("unit %s: kbuild command file: %w", u, err)
	}
	first, _, _ := bytes.Cut(b, []byte("\n"))
	if !bytes.Contains(first, []byte(" -DMODULE ")) {
		return "vmlinux", nil
	}
	m := modName.FindSubmatch(first)
	if m == nil {
		return "", fmt.Errorf("unit %s: built as a module but no KBUILD_MODNAME", u)
	}
	return strings.ReplaceAll(string(m[1]), "-", "_"), nil
}

// safeMountPath reports whether p can appear in overlay mount options.
func safeMountPath(p string) bool { return !strings.ContainsAny(p, ",:\\ \n\"'") }

// compileIn builds the units from the caller's source (View, else Src)
// with the extra files and the patch (if any) applied, in a private mount
// namespace where overlays show them at the prepared source's path, and
// returns the overlay's upper directory of the output tree, which holds the
// objects.
func (t *Tree) compileIn(ctx context.Context, units []string, patchFile, work string, extra map[string][]byte) (string, error) {
	for _, p := range []string{t.Src, t.viewDir(), t.Out, work, patchFile} {
		if !safeMountPath(p) {
			return "", fmt.Errorf("path %q cannot be used in an overlay mount (no commas, colons, spaces or quotes)", p)
		}
	}
	dirs := map[string]string{}
	for _, d := range []string{"src-up", "src-work", "out-up", "out-work"} {
		dirs[d] = filepath.Join(work, d)
		if err := os.MkdirAll(dirs[d], 0o755); err != nil {
			return "", err
		}
	}
	for rel, data := range extra {
		if filepath.IsAbs(rel) || strings.Contains("/"+rel+"/", "/../") {
			return "", fmt.Errorf("extra post source file %q outside the tree", rel)
		}
		p := filepath.Join(dirs["src-up"], rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return "", err
		}
	}
	var rm []string
	for _, u := range units {
		rm = append(rm, filepath.Join(t.Out, u))
	}
	// The post compile runs the pre compile's own command (kbuild's
	// command file: gcc, then objtool), which sees the patched sources
	// through the overlay at the same paths: no make, whose prepare checks
	// cost more than the compile. make is the fallback.
	compile := "cd " + shellQuote(t.Out)
	for _, u := range units {
		c, ok := t.savedCommand(u)
		if !ok {
			mk := append([]string{"make"}, t.makeArgs(append([]string{fmt.Sprintf("-j%d", t.jobs)}, units...)...)...)
			compile = shellJoin(mk)
			break
		}
		compile += "\n" + c
	}
	lines := []string{
		"set -e",
		fmt.Sprintf("mount -t overlay overlay -o lowerdir=%s,upperdir=%s,workdir=%s %s", t.viewDir(), dirs["src-up"], dirs["src-work"], t.Src),
		fmt.Sprintf("mount -t overlay overlay -o lowerdir=%s,upperdir=%s,workdir=%s %s", t.Out, dirs["out-up"], dirs["out-work"], t.Out),
	}
	if patchFile != "" {
		lines = append(lines, fmt.Sprintf("patch -p1 --batch --forward --silent --no-backup-if-mismatch -d %s < %s", shellQuote(t.Src), shellQuote(patchFile)))
	}
	script := strings.Join(append(lines, "rm -f "+shellJoin(rm), compile), "\n")
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := build.LastLines(out.String(), 25)
		if strings.Contains(msg, "Hunk") || strings.Contains(msg, "patch") && strings.Contains(msg, "FAILED") {
			return "", fmt.Errorf("the patch does not apply to %s:\n%s", t.viewDir(), msg)
		}
		if strings.Contains(msg, "error:") || strings.Contains(msg, "Error ") {
			return "", fmt.Errorf("compile units: %w\n%s", err, msg)
		}
		return "", fmt.Errorf("compile units (needs root for a private mount namespace with overlays): %w\n%s", err, msg)
	}
	return dirs["out-up"], nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

// BuildModule builds the external module in dir (a Kbuild file and its
// sources) against the prepared tree and returns the .ko of name. modpost
// only warns about undefined symbols: livepatch symbols are resolved by the
// kernel's livepatch core, not the module loader.
func (t *Tree) BuildModule(ctx context.Context, dir, name string) ([]byte, error) {
	if err := run(ctx, "make", "-C", t.Src, "O="+t.Out, "KERNELRELEASE="+t.Release, "M="+dir, "KBUILD_MODPOST_WARN=1", "modules"); err != nil {
		return nil, fmt.Errorf("build livepatch module: %w", err)
	}
	ko, err := os.ReadFile(filepath.Join(dir, name+".ko"))
	if err != nil {
		return nil, fmt.Errorf("build livepatch module: %w", err)
	}
	return ko, nil
}

// Exports reads the prepared tree's Module.symvers: the symbols the module
// loader resolves for a module (namespaced exports are left out: a
// livepatch reaches them through livepatch symbols instead).
func (t *Tree) Exports() (map[string]bool, error) {
	b, err := os.ReadFile(filepath.Join(t.Out, "Module.symvers"))
	if err != nil {
		return nil, fmt.Errorf("exports: %w", err)
	}
	ex := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, "\t")
		if len(f) < 4 {
			continue
		}
		if len(f) >= 5 && f[4] != "" {
			continue
		}
		ex[f[1]] = true
	}
	return ex, nil
}

// preUpToDate reports whether the cached pre object of unit u is newer than
// its source and every file its last compile read (kbuild's command file),
// and was compiled with UnitCFLAGS: then the pre make, which costs seconds
// of kbuild's own checks even when it has nothing to do, is skipped.
func (t *Tree) preUpToDate(u string) bool {
	st, err := os.Stat(filepath.Join(t.Out, u))
	if err != nil {
		return false
	}
	b, err := os.ReadFile(filepath.Join(t.Out, filepath.Dir(u), "."+filepath.Base(u)+".cmd"))
	if err != nil {
		return false
	}
	first, _, _ := bytes.Cut(b, []byte("\n"))
	if !bytes.Contains(first, []byte(UnitCFLAGS)) {
		return false
	}
	inDeps, sawDeps := false, false
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "source_"):
			_, src, _ := strings.Cut(l, ":=")
			if !notNewer(strings.TrimSpace(src), t.Out, st, false) {
				return false
			}
		case strings.HasPrefix(l, "deps_"):
			inDeps, sawDeps = true, true
		case inDeps && l == "":
			inDeps = false
		case inDeps:
			p := strings.TrimSpace(strings.TrimSuffix(l, "\\"))
			w, isWild := strings.CutPrefix(p, "$(wildcard ")
			if isWild {
				p = strings.TrimSuffix(w, ")")
			}
			if p != "" && !notNewer(p, t.Out, st, isWild) {
				return false
			}
		}
	}
	return sawDeps
}

// readsChanged reports whether unit u's last compile (kbuild's command
// file) read a file that the caller's source changed, or cannot tell.
func (t *Tree) readsChanged(u string) bool {
	b, err := os.ReadFile(filepath.Join(t.Out, filepath.Dir(u), "."+filepath.Base(u)+".cmd"))
	if err != nil {
		return true
	}
	changed := map[string]bool{}
	for _, c := range t.changed {
		changed[filepath.Join(t.Src, c)] = true
	}
	for _, f := range strings.Fields(strings.NewReplacer("\\", " ", ":=", " ").Replace(string(b))) {
		if changed[f] {
			return true
		}
	}
	return false
}

// notNewer reports whether file p (relative to out unless absolute) is not
// newer than the object; a missing file is fine only for a wildcard.
func notNewer(p, out string, obj os.FileInfo, wildcard bool) bool {
	if !filepath.IsAbs(p) {
		p = filepath.Join(out, p)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return wildcard
	}
	return !fi.ModTime().After(obj.ModTime())
}

// savedCommand returns the shell command kbuild last compiled unit u with,
// from its command file (make's escapes undone), if it has a plain one.
func (t *Tree) savedCommand(u string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(t.Out, filepath.Dir(u), "."+filepath.Base(u)+".cmd"))
	if err != nil {
		return "", false
	}
	first, _, _ := strings.Cut(string(b), "\n")
	c, ok := strings.CutPrefix(first, "cmd_"+u+" := ")
	if !ok {
		c, ok = strings.CutPrefix(first, "savedcmd_"+u+" := ")
	}
	if !ok || !strings.Contains(c, UnitCFLAGS) {
		return "", false
	}
	var cmd strings.Builder
	for i := 0; i < len(c); i++ {
		switch {
		case c[i] != '$':
			cmd.WriteByte(c[i])
		case strings.HasPrefix(c[i:], "$$"):
			cmd.WriteByte('$')
			i++
		case strings.HasPrefix(c[i:], "$(pound)"):
			cmd.WriteByte('#')
			i += len("$(pound)") - 1
		default:
			return "", false // a make construct: let make run it
		}
	}
	return cmd.String(), true
}
