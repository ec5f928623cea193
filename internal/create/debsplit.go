package create

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"livesplice/internal/deb"
	"livesplice/internal/update"
)

// SplitPatch is the outcome of create --deb --split for one patch that
// the newer version adds to debian/patches.
type SplitPatch struct {
	Name string       // the patch's name in debian/patches/series
	CVEs []string     // the CVE ids its header or debian/changelog names
	File *update.File // the update made, or nil
	// Skip says why no update was needed (the patch changes no code, or
	// none that reaches an installed file); Err why none could be made.
	Skip string
	Err  error
}

// SplitRest names the entry of CreateDebSplit's result for the code
// changes no added patch makes.
const SplitRest = "(rest)"

// CreateDebSplit makes one update per patch that version o.To adds to
// debian/patches (create --deb SRC --to NEW --split): in series order,
// each built on the installed code plus the patches before it that were
// made, and requiring the last one made. Patches that cannot be made are
// returned with the reason; the others are not held back by them. Code
// changes of o.To that no added patch makes (a patch changed in place, a
// new upstream release) are an error entry of their own, named SplitRest.
//
// The caller (the CLI, createDeb) has checked that o has To and neither
// Patch nor ID.
func CreateDebSplit(ctx context.Context, o DebOptions) ([]SplitPatch, error) {
	d, cleanup, err := o.fetch(ctx)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	patches, err := deb.NewPatches(d.tree, d.newTree)
	if err != nil {
		return nil, err
	}
	changelog, err := os.ReadFile(filepath.Join(d.newTree, "debian", "changelog"))
	if err != nil {
		return nil, err
	}
	// Each patch's code part, and whether they make all of o.To's code:
	// applied in order to a copy of the installed source they must give
	// the new version's code files.
	out := make([]SplitPatch, len(patches))
	code := make([][]byte, len(patches))
	cover := filepath.Join(d.work, "cover")
	if err := exec.CommandContext(ctx, "cp", "-a", d.tree, cover).Run(); err != nil {
		return nil, fmt.Errorf("copy %s: %w", d.tree, err)
	}
	for i, p := range patches {
		out[i] = SplitPatch{Name: p.Name, CVEs: p.CVEs(changelog, d.version)}
		code[i] = p.CodePart()
		if len(code[i]) == 0 {
			out[i].Skip = "changes no code"
			continue
		}
		if err := applyCode(ctx, cover, code[i], filepath.Join(d.work, fmt.Sprintf("cover-%d.patch", i))); err != nil {
			out[i].Err = fmt.Errorf("does not apply to %s %s with the patches before it: %w", o.Package, d.version, err)
			code[i] = nil
		}
	}
	if rest, err := deb.CodeDiff(cover, d.newTree); err != nil {
		return nil, err
	} else if len(rest) > 0 {
		out = append(out, SplitPatch{Name: SplitRest, Err: fmt.Errorf("code changes of %s %s that no added debian/patches entry makes (a patch changed in place, or new upstream code): %s: make them with --to without --split", o.Package, o.To, strings.Join(diffFiles(rest), ", "))})
	}
	work := false
	for _, c := range code {
		work = work || len(c) > 0
	}
	if !work {
		return out, nil
	}
	if err := d.build(ctx); err != nil {
		return nil, err
	}
	// One update per patch, each over its own copy of the plain build with
	// the code of the updates made before it: the code that runs once
	// they are applied.
	var made [][]byte
	last := ""
	for i, p := range patches {
		if len(code[i]) == 0 {
			continue
		}
		dir := filepath.Join(d.work, fmt.Sprintf("split-%02d", i+1))
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil, err
		}
		pre, err := d.pre.Clone(filepath.Join(dir, "pre"))
		if err != nil {
			return nil, err
		}
		for j, m := range made {
			if err := applyCode(ctx, pre.Root, m, filepath.Join(dir, fmt.Sprintf("made-%d.patch", j))); err != nil {
				return nil, fmt.Errorf("%s: the patches made before it: %w", p.Name, err)
			}
		}
		patchFile := filepath.Join(dir, "fix.patch")
		if err := os.WriteFile(patchFile, code[i], 0o644); err != nil {
			return nil, err
		}
		d.p.line("making the update of debian/patches/" + p.Name)
		id := splitID(o.Package, o.To, p.Name, out[:i])
		f, err := d.update(ctx, pre, id, patchFile, code[i])
		if !o.KeepWork {
			os.RemoveAll(dir)
		}
		switch {
		case err != nil:
			out[i].Err = err
		case len(f.Targets) == 0:
			out[i].Skip = "its code changes compile to nothing in the installed files"
		default:
			f.Debian = &update.Debian{Source: o.Package, From: d.version, To: o.To, Patch: p.Name, CVEs: out[i].CVEs}
			if last != "" {
				f.Requires = []string{last}
			}
			out[i].File, last = f, f.ID
			made = append(made, code[i])
		}
	}
	return out, nil
}

// applyCode applies a code diff (-p1) in dir, through file.
func applyCode(ctx context.Context, dir string, diff []byte, file string) error {
	if err := os.WriteFile(file, diff, 0o644); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "patch", "-p1", "--batch", "--forward", "--no-backup-if-mismatch", "-s", "-i", file)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("patch: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// diffFiles lists the files a unified diff changes (its +++ names).
func diffFiles(diff []byte) []string {
	var out []string
	for _, l := range strings.Split(string(diff), "\n") {
		if name, ok := strings.CutPrefix(l, "+++ b/"); ok {
			out = append(out, name)
		}
	}
	return out
}

// splitID names the update of a patch: PACKAGE-VERSION-PATCH (without
// its .patch or .diff), made an id; PACKAGE-VERSION-N (its place in the
// list) if that is taken by an earlier one.
func splitID(pkg, to, name string, earlier []SplitPatch) string {
	stem := strings.TrimSuffix(strings.TrimSuffix(name, ".patch"), ".diff")
	id := sanitizeID(pkg + "-" + to + "-" + stem)
	for _, e := range earlier {
		if e.File != nil && e.File.ID == id {
			return sanitizeID(fmt.Sprintf("%s-%s-%d", pkg, to, len(earlier)+1))
		}
	}
	return id
}
