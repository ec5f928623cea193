// Package kbuild compiles single translation units of a Linux source tree
// the way the running kernel was built, without ever building the kernel:
// a prepared output tree (olddefconfig, prepare, modules_prepare; `make O=`)
// is kept in a cache keyed by the top Makefile, config, release and
// compiler, and shared by sources that differ only in compiled .c/.h files
// (a tree with an earlier update's patch in it), and each patch compiles
// only the units it affects, pre and post. The post build sees the
// patched sources and writes its objects through overlay mounts in a private
// mount namespace, so neither the source tree nor the cached tree is ever
// modified by it.
package kbuild

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"livesplice/internal/build"
)

// UnitCFLAGS are added to every unit compile: one section per function and
// per variable, so that the differ can take functions apart.
const UnitCFLAGS = "-ffunction-sections -fdata-sections"

// marker is written into a prepared tree when preparation finished.
const marker = ".livesplice-prepared"

// sourceFile in a prepared tree names the source it was prepared from.
const sourceFile = ".livesplice-source"

// Options locate the inputs of a prepared tree.
type Options struct {
	Src     string    // the kernel source (never written)
	Config  string    // the running kernel's config
	Headers string    // the kernel's headers package dir (Module.symvers, release); optional
	Cache   string    // cache root; default $LIVESPLICE_CACHE or /var/cache/livesplice
	Log     io.Writer // progress lines; nil: quiet
	Jobs    int       // make -j; default 2
}

// Tree is a prepared output tree for one source, config and compiler.
type Tree struct {
	Src     string   // absolute path of the source the tree was prepared from
	View    string   // the caller's source, when it reuses the tree of Src ("": Src)
	changed []string // View's files that differ from Src's (relative)
	Out     string   // the prepared O= directory
	Release string   // KERNELRELEASE (uname -r of the target kernel)
	Key     string
	jobs    int
	log     io.Writer
}

// CacheRoot is where prepared trees live unless Options.Cache says otherwise.
func CacheRoot() string {
	if c := os.Getenv("LIVESPLICE_CACHE"); c != "" {
		return c
	}
	return "/var/cache/livesplice"
}

// Prepare returns the prepared tree for o, preparing it first if the cache
// does not hold it yet. Concurrent callers wait for each other (flock).
func Prepare(ctx context.Context, o Options) (*Tree, error) {
	src, err := filepath.Abs(o.Src)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(src, "Makefile")); err != nil {
		return nil, fmt.Errorf("kernel source %s: no Makefile (not a kernel source tree?)", src)
	}
	config, err := os.ReadFile(o.Config)
	if err != nil {
		return nil, fmt.Errorf("kernel config: %w", err)
	}
	if !bytes.Contains(config, []byte("\nCONFIG_LIVEPATCH=y")) {
		return nil, fmt.Errorf("kernel config %s: CONFIG_LIVEPATCH is not set; the kernel cannot load a livepatch", o.Config)
	}
	rel, err := release(o.Headers, o.Config)
	if err != nil {
		return nil, err
	}
	symvers, err := findSymvers(o.Headers, rel)
	if err != nil {
		return nil, err
	}
	cc, err := compilerID(ctx)
	if err != nil {
		return nil, err
	}
	mk, err := os.ReadFile(filepath.Join(src, "Makefile"))
	if err != nil {
		return nil, err
	}
	// Keyed by what the prepared tree is made from, not by the source's
	// path: another source that differs only in compiled .c/.h files (a
	// tree with an earlier update's patch in it) reuses the tree.
	key := hashKey("kbuild-v2", string(mk), string(config), rel, cc)
	root := o.Cache
	if root == "" {
		root = CacheRoot()
	}
	t := &Tree{Src: src, Out: filepath.Join(root, "kbuild", key), Release: rel, Key: key, jobs: o.Jobs, log: o.Log}
	if t.jobs <= 0 {
		t.jobs = 2
	}
	if err := os.MkdirAll(filepath.Dir(t.Out), 0o755); err != nil {
		return nil, fmt.Errorf("kernel build cache: %w", err)
	}
	unlock, err := lock(t.Out + ".lock")
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(t.Out, marker)); err == nil {
		b, err := os.ReadFile(filepath.Join(t.Out, sourceFile))
		prepared := strings.TrimSpace(string(b))
		if err != nil || prepared == src {
			return t, nil
		}
		changed, err := changedFiles(prepared, src)
		if err == nil {
			t.Src, t.View, t.changed = prepared, src, changed
			t.logf("using the kernel tree prepared for %s (%d file(s) of %s differ)", prepared, len(changed), src)
			return t, nil
		}
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// The source it was prepared from is gone: prepare it anew.
		case errors.Is(err, errNotReusable):
			// This source needs its own tree.
			t.Key = hashKey(key, src)
			t.Out = filepath.Join(root, "kbuild", t.Key)
			unlock2, err := lock(t.Out + ".lock")
			if err != nil {
				return nil, err
			}
			defer unlock2()
			if _, err := os.Stat(filepath.Join(t.Out, marker)); err == nil {
				return t, nil
			}
		default:
			return nil, fmt.Errorf("compare kernel sources %s and %s: %w", prepared, src, err)
		}
	}
	start := time.Now()
	t.logf("preparing kernel tree %s (release %s) in %s", src, rel, t.Out)
	if err := os.RemoveAll(t.Out); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(t.Out, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(t.Out, ".config"), config, 0o644); err != nil {
		return nil, err
	}
	if err := t.make(ctx, "olddefconfig"); err != nil {
		return nil, err
	}
	if err := t.make(ctx, fmt.Sprintf("-j%d", t.jobs), "prepare", "modules_prepare"); err != nil {
		return nil, err
	}
	// Debian's Module.symvers: the CRCs of the running kernel's exports, so
	// that the livepatch module's symbol versions match.
	sv, err := os.ReadFile(symvers)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", symvers, err)
	}
	if err := os.WriteFile(filepath.Join(t.Out, "Module.symvers"), sv, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(t.Out, sourceFile), []byte(src+"\n"), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(t.Out, marker), []byte(rel+"\n"), 0o644); err != nil {
		return nil, err
	}
	t.logf("prepared kernel tree in %.1fs", time.Since(start).Seconds())
	return t, nil
}

// hashKey hashes parts unambiguously into a 16-digit cache key.
func hashKey(parts ...string) string {
	h := sha256.New()
	for _, part := range parts {
		fmt.Fprintf(h, "%d:", len(part))
		io.WriteString(h, part)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// viewDir is the caller's source: what units are read from.
func (t *Tree) viewDir() string {
	if t.View != "" {
		return t.View
	}
	return t.Src
}

func (t *Tree) logf(format string, args ...any) {
	if t.log != nil {
		fmt.Fprintf(t.log, "livesplice: "+format+"\n", args...)
	}
}

// makeArgs are the arguments of every make in the tree.
func (t *Tree) makeArgs(extra ...string) []string {
	a := []string{"-C", t.Src, "O=" + t.Out, "KERNELRELEASE=" + t.Release, "KCFLAGS=" + UnitCFLAGS}
	return append(a, extra...)
}

func (t *Tree) make(ctx context.Context, targets ...string) error {
	return run(ctx, "make", t.makeArgs(targets...)...)
}

// run runs a command; on failure the error carries the tail of its output.
func run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, build.LastLines(out.String(), 25))
	}
	return nil
}

var utsRelease = regexp.MustCompile(`#define UTS_RELEASE "([^"]+)"`)

// release finds the target kernel's release: the headers' utsrelease.h, else
// the config's file name (/boot/config-<release>).
func release(headers, config string) (string, error) {
	if headers != "" {
		b, err := os.ReadFile(filepath.Join(headers, "include/generated/utsrelease.h"))
		if err == nil {
			if m := utsRelease.FindSubmatch(b); m != nil {
				return string(m[1]), nil
			}
		}
	}
	if r, ok := strings.CutPrefix(filepath.Base(config), "config-"); ok && r != "" {
		return r, nil
	}
	return "", fmt.Errorf("cannot tell the kernel release: give --headers DIR (with include/generated/utsrelease.h) or a config named config-<release>")
}

// findSymvers locates the running kernel's Module.symvers.
func findSymvers(headers, rel string) (string, error) {
	cands := []string{}
	if headers != "" {
		cands = append(cands, filepath.Join(headers, "Module.symvers"))
	}
	cands = append(cands, filepath.Join("/usr/src/linux-headers-"+rel, "Module.symvers"), filepath.Join("/lib/modules", rel, "build/Module.symvers"))
	for _, c := range cands {
		if _, err := os.Stat(c); err == nil {
			return c, nil
		}
	}
	return "", fmt.Errorf("no Module.symvers for kernel %s: give --headers DIR (the linux-headers package of the running kernel)", rel)
}

func compilerID(ctx context.Context) (string, error) {
	var id strings.Builder
	for _, c := range [][]string{{"gcc", "--version"}, {"ld", "--version"}} {
		out, err := exec.CommandContext(ctx, c[0], c[1:]...).Output()
		if err != nil {
			return "", fmt.Errorf("%s: %w (install gcc and binutils)", c[0], err)
		}
		first, _, _ := strings.Cut(string(out), "\n")
		id.WriteString(first + "\n")
	}
	return id.String(), nil
}

// lock takes an exclusive flock on path.
func lock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// PatchedFiles lists the files a unified diff touches, relative to the tree
// (patch -p1), in the order they appear.
func PatchedFiles(patch []byte) ([]string, error) {
	var files []string
	seen := map[string]bool{}
	var minus string
	sc := bufio.NewScanner(bytes.NewReader(patch))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "--- "); ok {
			minus = diffPath(p)
			continue
		}
		p, ok := strings.CutPrefix(line, "+++ ")
		if !ok {
			continue
		}
		f := diffPath(p)
		if f == "" {
			f = minus // a deleted file
		}
		if f == "" || strings.HasPrefix(f, "/") || strings.Contains("/"+f+"/", "/../") {
			return nil, fmt.Errorf("patch names a bad path %q", strings.TrimSpace(p))
		}
		if !seen[f] {
			seen[f] = true
			files = append(files, f)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, errors.New("the patch names no file (not a unified diff?)")
	}
	return files, nil
}

// diffPath strips a diff header path of its timestamp and first component.
func diffPath(p string) string {
	p, _, _ = strings.Cut(p, "\t")
	p = strings.TrimSpace(p)
	if p == "/dev/null" {
		return ""
	}
	if _, rest, ok := strings.Cut(p, "/"); ok {
		return filepath.Clean(rest)
	}
	return ""
}
