// Package deb turns a Debian source package into create's inputs: it
// fetches the source of a version through apt, installs its build
// dependencies, names the command that builds it the way Debian does,
// lists the ELF files its installed binary packages ship, computes the
// code changes between two versions and recovers the symbol tables of the
// shipped (stripped) files from a plain build whose code is identical to
// theirs.
package deb

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"livesplice/internal/build"
)

// BuildCmd builds an unpacked source tree the way Debian's build daemons
// do: debian/rules through dpkg-buildpackage, which exports
// dpkg-buildflags' flags (hardening included) and the rest of the build
// environment. Only the architecture-dependent part, without the test
// suite: what the binary packages' ELF files come from.
const BuildCmd = "DEB_BUILD_OPTIONS=nocheck dpkg-buildpackage -T build-arch -uc -us -d"

// ErrNoSources is returned when apt has no deb-src entries.
var ErrNoSources = errors.New("apt has no deb-src entries: add \"Types: deb deb-src\" (or a deb-src file such as /etc/apt/sources.list.d/livesplice-src.sources) for the archive and its security archive, then run apt-get update")

// Binary is an installed binary package and the version of its source.
type Binary struct {
	Package string // binary package (with :arch when dpkg names it so)
	Version string // its source package's version
}

// Installation is what create --deb patches: the installed binary
// packages of a source package at one source version, and the others,
// installed at another version (a library upgraded without its -dev or
// -utils package), which are left alone.
type Installation struct {
	Version string
	Pkgs    []string // at Version, sorted
	Files   []string // the ELF files they ship (Files)
	Skipped []Binary // at other versions, sorted
}

// Installed returns the installed binary packages of source package src
// at version want (default: the one version whose packages ship ELF
// files) and the files they ship; the packages at other versions are
// listed as skipped. It refuses only when no shipped file is at the
// version.
func Installed(ctx context.Context, src, want string) (*Installation, error) {
	out, err := run(ctx, "", nil, "dpkg-query", "-W", "-f", "${binary:Package}\t${source:Package}\t${source:Version}\t${db:Status-Abbrev}\n")
	if err != nil {
		return nil, err
	}
	var bins []Binary
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 4 || f[1] != src || strings.TrimSpace(f[3]) != "ii" {
			continue
		}
		bins = append(bins, Binary{Package: f[0], Version: f[2]})
	}
	return pickVersion(src, bins, want, func(pkgs []string) ([]string, error) { return Files(ctx, pkgs) })
}

// pickVersion chooses the version of the installed binary packages bins
// of source package src that create patches: want if set, else the only
// version installed, else the only one whose packages ship ELF files
// (files lists them).
func pickVersion(src string, bins []Binary, want string, files func(pkgs []string) ([]string, error)) (*Installation, error) {
	if len(bins) == 0 {
		return nil, fmt.Errorf("no binary package of source package %s is installed: install it first (its files are what the update patches)", src)
	}
	byVersion := map[string][]string{}
	var versions []string
	for _, b := range bins {
		if _, ok := byVersion[b.Version]; !ok {
			versions = append(versions, b.Version)
		}
		byVersion[b.Version] = append(byVersion[b.Version], b.Package)
	}
	sort.Strings(versions)
	list := func(vs []string) string {
		var parts []string
		for _, v := range vs {
			ps := append([]string(nil), byVersion[v]...)
			sort.Strings(ps)
			parts = append(parts, fmt.Sprintf("%s (%s)", v, strings.Join(ps, ", ")))
		}
		return strings.Join(parts, ", ")
	}
	inst := &Installation{Version: want}
	shipped := map[string][]string{} // version -> its files, as files listed them
	if want != "" {
		if byVersion[want] == nil {
			return nil, fmt.Errorf("source package %s: no binary package is installed at version %s (installed: %s): the update patches the installed files", src, want, list(versions))
		}
	} else if len(versions) == 1 {
		inst.Version = versions[0]
	} else {
		// Several versions: the one whose packages ship code is the one
		// to patch (the others are -dev, -doc, data packages).
		var shipping []string
		for _, v := range versions {
			fs, err := files(byVersion[v])
			if err != nil {
				return nil, err
			}
			if len(fs) > 0 {
				shipping = append(shipping, v)
			}
			shipped[v] = fs
		}
		if len(shipping) != 1 {
			return nil, fmt.Errorf("source package %s: versions %s are installed: say which one to patch with --version", src, list(versions))
		}
		inst.Version = shipping[0]
	}
	inst.Pkgs = append(inst.Pkgs, byVersion[inst.Version]...)
	sort.Strings(inst.Pkgs)
	for _, b := range bins {
		if b.Version != inst.Version {
			inst.Skipped = append(inst.Skipped, b)
		}
	}
	sort.Slice(inst.Skipped, func(i, j int) bool { return inst.Skipped[i].Package < inst.Skipped[j].Package })
	fs, ok := shipped[inst.Version]
	if !ok {
		var err error
		if fs, err = files(inst.Pkgs); err != nil {
			return nil, err
		}
	}
	if len(fs) == 0 {
		return nil, fmt.Errorf("source package %s: the binary packages installed at version %s (%s) ship no ELF file: nothing to patch", src, inst.Version, strings.Join(inst.Pkgs, ", "))
	}
	inst.Files = fs
	return inst, nil
}

// Fetch downloads and unpacks version of source package src into dir,
// which must be empty or missing, and returns the unpacked tree.
func Fetch(ctx context.Context, src, version, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if _, err := run(ctx, dir, nil, "apt-get", "source", "-q", "--only-source", src+"="+version); err != nil {
		if strings.Contains(err.Error(), "deb-src") {
			return "", fmt.Errorf("fetch source package %s %s: %w", src, version, ErrNoSources)
		}
		if strings.Contains(err.Error(), "Can not find version") {
			return "", fmt.Errorf("fetch source package %s %s: apt's sources no longer (or do not yet) serve that version (an older one is on snapshot.debian.org): %w", src, version, err)
		}
		return "", fmt.Errorf("fetch source package %s %s: %w", src, version, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var trees []string
	for _, e := range ents {
		if e.IsDir() {
			trees = append(trees, filepath.Join(dir, e.Name()))
		}
	}
	if len(trees) != 1 {
		return "", fmt.Errorf("fetch source package %s %s: apt-get source unpacked %d trees in %s", src, version, len(trees), dir)
	}
	return trees[0], nil
}

// BuildDeps makes sure the architecture-dependent build dependencies of
// the tree are installed, installing them with apt-get build-dep (as root).
func BuildDeps(ctx context.Context, tree string) error {
	if _, err := run(ctx, tree, nil, "dpkg-checkbuilddeps", "-B"); err == nil {
		return nil
	} else if os.Geteuid() != 0 {
		return fmt.Errorf("build dependencies missing (run as root, or apt-get build-dep --arch-only %s): %w", tree, err)
	}
	env := []string{"DEBIAN_FRONTEND=noninteractive"}
	if _, err := run(ctx, tree, env, "apt-get", "build-dep", "-y", "-q", "--arch-only", "."); err != nil {
		return fmt.Errorf("install build dependencies: %w", err)
	}
	return nil
}

// Files returns the ELF executables and shared libraries that the binary
// packages pkgs installed (regular files, not their symlinks).
func Files(ctx context.Context, pkgs []string) ([]string, error) {
	var out []string
	for _, p := range pkgs {
		list, err := run(ctx, "", nil, "dpkg-query", "-L", p)
		if err != nil {
			return nil, err
		}
		for _, f := range strings.Split(list, "\n") {
			// Detached debug information (-dbgsym packages) is ELF with
			// the shipped file's build-id but no code.
			if f == "" || strings.HasPrefix(f, "/usr/lib/debug/") {
				continue
			}
			if fi, err := os.Lstat(f); err != nil || !fi.Mode().IsRegular() {
				continue
			}
			if isLinkedELF(f) {
				out = append(out, f)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// isLinkedELF reports whether p is an ELF executable or shared library.
func isLinkedELF(p string) bool {
	f, err := elf.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	return f.Type == elf.ET_EXEC || f.Type == elf.ET_DYN
}

// run runs a command and returns its standard output; a failure carries
// the last lines of its output.
func run(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, build.LastLines(stderr.String()+stdout.String(), 6))
	}
	return stdout.String(), nil
}

// CleanPath is the PATH of create --deb's build: the distribution's own
// directories. /usr/local is left out: on a host it holds the admin's own
// tools (a python3 of a version manager, a newer compiler) that a build
// daemon's chroot does not have.
const CleanPath = "/usr/sbin:/usr/bin:/sbin:/bin"

// CleanEnv is the environment create --deb builds in, as Debian's build
// daemons do: the standard PATH, the C.UTF-8 locale, HOME (an empty
// directory), and nothing of the caller's (no CC, CFLAGS, PYTHONPATH,
// LD_LIBRARY_PATH, version manager, locale); dpkg-buildpackage sets the
// rest (dpkg-buildflags' flags, SOURCE_DATE_EPOCH, DEB_* variables).
func CleanEnv(home string) []string {
	return []string{"PATH=" + CleanPath, "LC_ALL=C.UTF-8", "HOME=" + home}
}
