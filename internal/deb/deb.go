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
)

// BuildCmd builds an unpacked source tree the way Debian's build daemons
// do: debian/rules through dpkg-buildpackage, which exports
// dpkg-buildflags' flags (hardening included) and the rest of the build
// environment. Only the architecture-dependent part, without the test
// suite: what the binary packages' ELF files come from.
const BuildCmd = "DEB_BUILD_OPTIONS=nocheck dpkg-buildpackage -T build-arch -uc -us -d"

// ErrNoSources is returned when apt has no deb-src entries.
var ErrNoSources = errors.New("apt has no deb-src entries: add \"Types: deb deb-src\" (or a deb-src file such as /etc/apt/sources.list.d/livesplice-src.sources) for the archive and its security archive, then run apt-get update")

// Installed returns the version of source package src installed here and
// its binary packages that are installed.
func Installed(ctx context.Context, src string) (version string, pkgs []string, err error) {
	out, err := run(ctx, "", nil, "dpkg-query", "-W", "-f", "${binary:Package}\t${source:Package}\t${source:Version}\t${db:Status-Abbrev}\n")
	if err != nil {
		return "", nil, err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 4 || f[1] != src || strings.TrimSpace(f[3]) != "ii" {
			continue
		}
		if version != "" && version != f[2] {
			return "", nil, fmt.Errorf("source package %s: versions %s and %s are both installed", src, version, f[2])
		}
		version = f[2]
		pkgs = append(pkgs, f[0])
	}
	if version == "" {
		return "", nil, fmt.Errorf("no binary package of source package %s is installed: install it first (its files are what the update patches)", src)
	}
	sort.Strings(pkgs)
	return version, pkgs, nil
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
			if f == "" {
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
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, lastLines(stderr.String()+stdout.String(), 6))
	}
	return stdout.String(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
