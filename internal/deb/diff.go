package deb

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// codeExts are the source files whose changes are code changes: C and C++
// sources and headers, assembly. A newer version's other changes
// (packaging, documentation, build system, tests' data) are not spliced.
var codeExts = map[string]bool{
	".c": true, ".h": true, ".cc": true, ".cpp": true, ".cxx": true, ".hh": true,
	".hpp": true, ".hxx": true, ".inc": true, ".s": true, ".S": true,
}

// CodeDiff returns a unified diff (for patch -p1) of the code files that
// differ between two unpacked source trees, Debian's patches applied:
// what a newer version changed in code. debian/ and quilt's .pc/ are left
// out. It is empty when no code changed.
func CodeDiff(pre, post string) ([]byte, error) {
	a, err := codeFiles(pre)
	if err != nil {
		return nil, err
	}
	b, err := codeFiles(post)
	if err != nil {
		return nil, err
	}
	all := map[string]bool{}
	for f := range a {
		all[f] = true
	}
	for f := range b {
		all[f] = true
	}
	var names []string
	for f := range all {
		names = append(names, f)
	}
	sort.Strings(names)
	var out bytes.Buffer
	for _, rel := range names {
		from, to := filepath.Join(pre, rel), filepath.Join(post, rel)
		if !a[rel] {
			from = os.DevNull
		}
		if !b[rel] {
			to = os.DevNull
		}
		d, err := diffFiles(from, to, "a/"+rel, "b/"+rel)
		if err != nil {
			return nil, err
		}
		out.Write(d)
	}
	return out.Bytes(), nil
}

// codeFiles lists the regular code files of a tree by relative path.
func codeFiles(root string) (map[string]bool, error) {
	out := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if d.IsDir() && (rel == "debian" || rel == ".pc" || rel == ".git") {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() && codeExts[filepath.Ext(p)] {
			out[filepath.ToSlash(rel)] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list code files of %s: %w", root, err)
	}
	return out, nil
}

// diffFiles runs diff -u; no output when the files are equal.
func diffFiles(from, to, fromLabel, toLabel string) ([]byte, error) {
	cmd := exec.Command("diff", "-u", "--label", fromLabel, "--label", toLabel, from, to)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		return out, nil // the files differ
	}
	if err != nil {
		return nil, fmt.Errorf("diff %s %s: %v: %s", from, to, err, strings.TrimSpace(stderr.String()))
	}
	return nil, nil
}

// IsCode reports whether a source file's changes are code changes (C,
// C++, headers, assembly).
func IsCode(path string) bool { return codeExts[filepath.Ext(path)] }
