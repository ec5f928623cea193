package build

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

type copyOpts struct {
	skipGit bool   // leave out a top-level .git
	clean   bool   // leave out ELF files and ar archives
	skip    string // absolute path not to descend into (WorkDir inside Src)
}

var (
	elfMagic  = []byte("\x7fELF")
	arMagic   = []byte("!<arch>\n")
	thinMagic = []byte("!<thin>\n")
)

// copyTree copies src to dst (which must not exist), keeping modes, mtimes
// and symlinks. Mtimes matter: make decides what to rerun from them, so the
// copy must keep their order as it is in src. With clean, build products
// (ELF files, archives) are left out so that make rebuilds them with our
// flags. Special files are skipped.
func copyTree(src, dst string, o copyOpts) error {
	type dirAttr struct {
		path  string
		mode  fs.FileMode
		mtime time.Time
	}
	var dirs []dirAttr
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch t := d.Type(); {
		case t.IsDir():
			if o.skipGit && rel == ".git" || o.skip != "" && p == o.skip {
				return filepath.SkipDir
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			// Owner-writable until the end, so read-only dirs can be filled.
			if err := os.Mkdir(target, 0o700); err != nil {
				return err
			}
			dirs = append(dirs, dirAttr{target, fi.Mode(), fi.ModTime()})
		case t&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		case t.IsRegular():
			return copyFile(p, target, o.clean)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Children first, so setting a parent's mtime is the last touch on it.
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if err := os.Chmod(d.path, d.mode.Perm()|d.mode&(fs.ModeSetgid|fs.ModeSticky|fs.ModeSetuid)); err != nil {
			return err
		}
		if err := os.Chtimes(d.path, d.mtime, d.mtime); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string, clean bool) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if clean {
		var head [8]byte
		n, _ := io.ReadFull(in, head[:])
		if isBuildProduct(head[:n]) {
			return nil
		}
		if _, err := in.Seek(0, io.SeekStart); err != nil {
			return err
		}
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	m := fi.Mode()
	if err := os.Chmod(dst, m.Perm()|m&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
		return err
	}
	return os.Chtimes(dst, fi.ModTime(), fi.ModTime())
}

// isBuildProduct tells from a file's first bytes whether it is an ELF file
// or an ar archive, i.e. something make would otherwise consider up to date.
func isBuildProduct(head []byte) bool {
	return bytes.HasPrefix(head, elfMagic) || bytes.HasPrefix(head, arMagic) || bytes.HasPrefix(head, thinMagic)
}
