package kbuild

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// A prepared tree only depends on the files that kbuild's prepare reads or
// generates from: Makefiles, Kconfig, scripts/, tools/ (objtool), syscall
// tables, the asm-offsets and bounds units. Two sources that differ only in
// other .c/.h files (a tree with an earlier update's patch applied, for a
// stacked update) can share one prepared tree: the tree stays bound to the
// source it was prepared from, and compiles see the other source mounted
// over that path (Tree.View).

// maxCompareBytes bounds the bytes compared when the two sources' files
// have the same size but other times (a copy that did not keep them).
const maxCompareBytes = 64 << 20

// errNotReusable says the sources differ in more than compiled code.
var errNotReusable = errors.New("sources differ in build files")

type fileStat struct {
	size  int64
	mtime int64
	ino   uint64
	dev   uint64
	mode  fs.FileMode
}

// sourceFiles lists the regular files and symlinks of a source tree.
func sourceFiles(root string) (map[string]fileStat, error) {
	files := map[string]fileStat{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no stat", p)
		}
		rel, _ := filepath.Rel(root, p)
		files[rel] = fileStat{size: fi.Size(), mtime: fi.ModTime().UnixNano(), ino: st.Ino, dev: st.Dev, mode: fi.Mode().Type()}
		return nil
	})
	return files, err
}

// changedFiles compares source b against source a (the one a tree was
// prepared from) and returns the files of b that differ, relative to the
// tree. It returns errNotReusable when one of them is a file that the
// prepared tree depends on. Hard-linked copies (cp -al, then patch, which
// replaces the files it changes) compare by inode and cost one walk each.
func changedFiles(a, b string) ([]string, error) {
	fa, err := sourceFiles(a)
	if err != nil {
		return nil, err
	}
	fb, err := sourceFiles(b)
	if err != nil {
		return nil, err
	}
	var changed []string
	budget := int64(maxCompareBytes)
	for rel, sb := range fb {
		sa, ok := fa[rel]
		switch {
		case ok && sa.ino == sb.ino && sa.dev == sb.dev:
			continue
		case ok && sa.mode == sb.mode && sa.size == sb.size && sa.mtime == sb.mtime:
			continue
		case ok && sa.mode == sb.mode && sa.size == sb.size:
			budget -= sa.size
			if budget < 0 {
				return nil, fmt.Errorf("%w: too many files with other times to compare", errNotReusable)
			}
			same, err := sameContent(filepath.Join(a, rel), filepath.Join(b, rel), sa.mode)
			if err != nil {
				return nil, err
			}
			if same {
				continue
			}
		}
		if !compiledOnly(rel) {
			return nil, fmt.Errorf("%w: %s", errNotReusable, rel)
		}
		changed = append(changed, rel)
	}
	for rel := range fa {
		if _, ok := fb[rel]; !ok && !compiledOnly(rel) {
			return nil, fmt.Errorf("%w: %s is missing", errNotReusable, rel)
		}
	}
	slices.Sort(changed)
	return changed, nil
}

func sameContent(a, b string, mode fs.FileMode) (bool, error) {
	if mode&fs.ModeSymlink != 0 {
		la, err := os.Readlink(a)
		if err != nil {
			return false, err
		}
		lb, err := os.Readlink(b)
		return la == lb, err
	}
	da, err := os.ReadFile(a)
	if err != nil {
		return false, err
	}
	db, err := os.ReadFile(b)
	if err != nil {
		return false, err
	}
	return bytes.Equal(da, db), nil
}

// compiledOnly reports whether a source file may differ between sources
// that share a prepared tree: a .c or .h file that prepare neither compiles
// nor generates from.
func compiledOnly(rel string) bool {
	if ext := filepath.Ext(rel); ext != ".c" && ext != ".h" {
		return false
	}
	for _, p := range []string{"scripts/", "tools/", "usr/", "include/generated/", "arch/x86/tools/"} {
		if strings.HasPrefix(rel, p) {
			return false
		}
	}
	base := filepath.Base(rel)
	return rel != "kernel/bounds.c" && !strings.HasPrefix(base, "asm-offsets")
}
