// Package build makes the pre and post trees of an update: copies of the
// source tree, the post one patched, each built through a compiler wrapper
// that records every compile and link and adds the flags the object differ
// needs.
package build

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"livesplice/include"
)

// Options says what to build and where.
type Options struct {
	Src      string    // the unpatched source tree (never modified)
	Patch    string    // unified diff, applied with `patch -p1` in the post tree
	BuildCmd string    // shell command run in each tree's root, default "make"
	WorkDir  string    // where to make pre/ and post/ (caller creates/removes it)
	Self     string    // path of the executable that acts as the compiler wrapper (argv[0] dispatch), usually os.Executable()
	Progress io.Writer // nil: silent; else one line per step ("building pre tree...", "built pre tree in 1.2s")
	// Env (RunPlain only) is the environment the build and the
	// recompiles start from, PATH included (the real compilers are looked
	// up on it); nil: the caller's.
	Env []string
}

// Result holds the two built trees.
type Result struct {
	Pre, Post *Tree
	// Unread (Recompile only) are the files the patch changed that no
	// compile of the considered units reads (relative, sorted).
	Unread []string
}

// Tree is one built copy of the source tree.
type Tree struct {
	Root    string
	Objects []Object // every object file compiled, sorted by Rel
	Outputs []Output // every linked executable or shared library, sorted by Rel

	units []unit     // how each object was compiled (for Recompile)
	plain *plainInfo // the compilers and flags of the tree's compiles (Recompile, CompileVariant)
}

// unit is one compilation unit as the build compiled it: one source into
// one object. Paths are absolute, in the tree it was built in.
type unit struct {
	obj      string   // the object; "" for a compile-and-link source no object can be named for
	source   string   // the source compiled
	cwd      string   // where the compiler ran
	args     []string // the compiler's arguments as the build gave them
	compiler string   // the name the build called the compiler by (cc, g++, ...)
	env      []string // the compilerEnv variables the compile had
	link     string   // for a source compiled and linked in one: the output's Rel
}

// Object is an object file compiled in a tree.
type Object struct {
	Rel    string // path relative to Root
	Source string // source path relative to Root (absolute if the source lies outside the tree)
}

// Output is an executable or shared library linked in a tree.
type Output struct {
	Rel     string   // path relative to Root
	Shared  bool     // linked with -shared
	Objects []string // Rel paths of the objects linked in (directly, or as members of a static archive .a built in the tree)
}

// Environment variables shared by Run and the wrapper.
const (
	envLog     = "LIVESPLICE_WRAP_LOG"
	envTree    = "LIVESPLICE_TREE"
	envSrc     = "LIVESPLICE_SRC"
	envRealCC  = "LIVESPLICE_REAL_CC"
	envRealCXX = "LIVESPLICE_REAL_CXX"
	envInclude = "LIVESPLICE_INCLUDE"    // directory holding livesplice.h
	envPlain   = "LIVESPLICE_WRAP_PLAIN" // non-empty: run the compiler with the arguments as given, only log (RunPlain)
)

// wrapperNames are the names under which the wrapper is installed in bin/;
// the target triplet's names are what Debian's build systems may call.
var wrapperNames = []string{"cc", "gcc", "c++", "g++", "x86_64-linux-gnu-gcc", "x86_64-linux-gnu-g++"}

// tailLines is how much of a failed build's output goes into the error.
const tailLines = 20

// Run makes WorkDir/pre (a cleaned copy of Src) and WorkDir/post (pre with
// the patch applied), builds both concurrently through the compiler wrapper
// and returns what each build compiled and linked.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Patch == "" && o.Src != "" && o.WorkDir != "" && o.Self != "" {
		return nil, errors.New("build: no patch given")
	}
	paths, err := o.resolve()
	if err != nil {
		return nil, err
	}
	src, work, self, realCC, realCXX := paths.src, paths.work, paths.self, paths.cc, paths.cxx
	patchFile, err := patchPath(o.Patch)
	if err != nil {
		return nil, err
	}

	p := &progress{w: o.Progress}
	pre := filepath.Join(work, "pre")
	post := filepath.Join(work, "post")
	for _, d := range []string{pre, post} {
		if _, err := os.Lstat(d); err == nil {
			return nil, fmt.Errorf("build: %s already exists", d)
		}
	}

	start := p.start("copying source tree")
	if err := copyTree(src, pre, copyOpts{skipGit: true, clean: true, skip: work}); err != nil {
		return nil, fmt.Errorf("build: copying %s: %w", src, err)
	}
	if err := copyTree(pre, post, copyOpts{}); err != nil {
		return nil, fmt.Errorf("build: copying %s: %w", pre, err)
	}
	p.done("copied source tree", start)

	start = p.start("applying patch")
	if err := applyPatch(ctx, post, patchFile); err != nil {
		return nil, err
	}
	p.done("applied patch", start)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}

	bin, incDir, err := toolDirs(work, self)
	if err != nil {
		return nil, err
	}

	trees := []struct {
		name, root string
		err        error
		killed     bool
	}{{name: "pre", root: pre}, {name: "post", root: post}}
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	starts := make([]time.Time, len(trees))
	for i, t := range trees {
		starts[i] = p.start("building " + t.name + " tree")
	}
	for i := range trees {
		t := &trees[i]
		start := starts[i]
		wg.Go(func() {
			log := filepath.Join(work, t.name+".log")
			// A log from an earlier run in the same WorkDir must not leak in.
			os.Remove(log)
			env := append(buildEnv(bin, t.root, src, realCC, realCXX, log), envInclude+"="+incDir)
			t.err = runBuild(bctx, t.root, o.BuildCmd, env, filepath.Join(work, t.name+".out"))
			if t.err != nil {
				// Killed because the other build failed: only the first
				// failure is worth reporting.
				t.killed = bctx.Err() != nil
				cancel()
				return
			}
			p.done("built "+t.name+" tree", start)
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("build: %w", ctx.Err())
	}
	var errs []error
	for _, t := range trees {
		if t.err != nil && !t.killed {
			errs = append(errs, fmt.Errorf("build: build of %s tree (%s) failed: %w", t.name, t.root, t.err))
		}
	}
	if len(errs) == 0 {
		for _, t := range trees {
			if t.err != nil {
				errs = append(errs, fmt.Errorf("build: build of %s tree (%s) failed: %w", t.name, t.root, t.err))
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	res := &Result{}
	for i, t := range trees {
		tr, n, err := readTree(t.root, filepath.Join(work, t.name+".log"))
		if err != nil {
			return nil, fmt.Errorf("build: %s tree: %w", t.name, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("build: the build of %s compiled nothing through livesplice's compiler wrapper: use $(CC)/cc/gcc from PATH, not an absolute compiler path", t.root)
		}
		tr.plain = &plainInfo{src: src, inc: incDir, cc: realCC, cxx: realCXX}
		if i == 0 {
			res.Pre = tr
		} else {
			res.Post = tr
		}
	}
	return res, nil
}

// paths are a build's directories and compilers, resolved once.
type paths struct {
	src, work, self string
	cc, cxx         string // cxx is "" without a g++
}

// resolve checks the options every build needs and resolves their paths.
// Symlinks are resolved once so that the paths handed out match what make
// ($(CURDIR)) and gcc (getcwd) see; otherwise the prefix map and the
// relative paths computed from the logs would miss.
func (o *Options) resolve() (paths, error) {
	var r paths
	if o.Src == "" || o.WorkDir == "" || o.Self == "" {
		return r, errors.New("build: Src, WorkDir and Self must be set")
	}
	if o.BuildCmd == "" {
		o.BuildCmd = "make"
	}
	var err error
	if r.src, err = realAbs(o.Src); err != nil {
		return r, fmt.Errorf("build: source tree: %w", err)
	}
	if r.work, err = realAbs(o.WorkDir); err != nil {
		return r, fmt.Errorf("build: work directory: %w", err)
	}
	if r.self, err = filepath.Abs(o.Self); err != nil {
		return r, fmt.Errorf("build: wrapper: %w", err)
	}
	path := os.Getenv("PATH")
	if o.Env != nil {
		path = envValue(o.Env, "PATH")
	}
	if r.cc, err = findRealIn("gcc", r.self, path); err != nil {
		return r, fmt.Errorf("build: no real C compiler: %w", err)
	}
	// A C-only project must not need g++, so a missing one only fails if
	// the build actually calls c++/g++.
	r.cxx, _ = findRealIn("g++", r.self, path)
	return r, nil
}

// toolDirs makes the directories a build puts first on its paths: bin
// with the compiler wrapper under the compilers' names, and the include
// directory holding livesplice.h.
func toolDirs(work, self string) (bin, inc string, err error) {
	bin, inc = filepath.Join(work, "bin"), filepath.Join(work, "include")
	if err := makeBin(bin, self); err != nil {
		return "", "", fmt.Errorf("build: %w", err)
	}
	if err := writeHeader(inc); err != nil {
		return "", "", fmt.Errorf("build: %w", err)
	}
	return bin, inc, nil
}

// patchPath is the patch file's absolute path, checked to exist.
func patchPath(patch string) (string, error) {
	abs, err := filepath.Abs(patch)
	if err == nil {
		_, err = os.Stat(abs)
	}
	if err != nil {
		return "", fmt.Errorf("build: patch: %w", err)
	}
	return abs, nil
}

// realAbs returns p made absolute with symlinks resolved.
func realAbs(p string) (string, error) {
	a, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(a)
}

// findReal looks name up on PATH, skipping anything that is the wrapper
// itself, so that running livesplice from inside a wrapped build still finds
// the real compiler.
func findReal(name, self string) (string, error) {
	return findRealIn(name, self, os.Getenv("PATH"))
}

// findRealIn is findReal on the search path path.
func findRealIn(name, self, path string) (string, error) {
	selfInfo, _ := os.Stat(self)
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			continue
		}
		if selfInfo != nil && os.SameFile(fi, selfInfo) {
			continue
		}
		if !filepath.IsAbs(p) {
			if p, err = filepath.Abs(p); err != nil {
				continue
			}
		}
		return p, nil
	}
	return "", fmt.Errorf("%s not found on PATH", name)
}

func makeBin(bin, self string) error {
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	for _, n := range wrapperNames {
		l := filepath.Join(bin, n)
		// Replace a stale link from an earlier run in the same WorkDir.
		os.Remove(l)
		if err := os.Symlink(self, l); err != nil {
			return err
		}
	}
	return nil
}

// writeHeader puts livesplice.h, for patches with custom code, into dir.
func writeHeader(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, include.HeaderName), include.Header, 0o644)
}

func buildEnv(bin, root, src, realCC, realCXX, log string) []string {
	set := map[string]string{
		"PATH":              bin + string(os.PathListSeparator) + os.Getenv("PATH"),
		"CC":                filepath.Join(bin, "cc"),
		"CXX":               filepath.Join(bin, "c++"),
		"PWD":               root,
		envLog:              log,
		envTree:             root,
		envSrc:              src,
		envRealCC:           realCC,
		envRealCXX:          realCXX,
		"SOURCE_DATE_EPOCH": "0",
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; !ok {
			env = append(env, kv)
		}
	}
	// Sorted, so both builds and every run see the same environment.
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+set[k])
	}
	return env
}

func applyPatch(ctx context.Context, dir, patchFile string) error {
	cmd := exec.CommandContext(ctx, "patch", "-p1", "--batch", "--forward", "--no-backup-if-mismatch", "-i", patchFile)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("build: patch %s does not apply to %s: %v\n%s", patchFile, dir, err, strings.TrimRight(string(out), "\n"))
	}
	return nil
}

// runBuild runs cmdline with sh in root, output to outFile. The build gets its
// own process group so that cancelling kills make and everything it started.
func runBuild(ctx context.Context, root, cmdline string, env []string, outFile string) error {
	out, err := os.Create(outFile)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.CommandContext(ctx, "sh", "-c", cmdline)
	cmd.Dir = root
	cmd.Env = env
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()
	if runErr == nil {
		return nil
	}
	return fmt.Errorf("%v; last lines of %s:\n%s", runErr, outFile, tail(outFile, tailLines))
}

// tail returns the last n lines of a file.
func tail(file string, n int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	return LastLines(string(b), n)
}

// progress writes one line per step; the two builds report concurrently.
type progress struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *progress) line(s string) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var b bytes.Buffer
	b.WriteString(s)
	b.WriteByte('\n')
	p.w.Write(b.Bytes())
}

func (p *progress) start(what string) time.Time {
	p.line(what + "...")
	return time.Now()
}

func (p *progress) done(what string, start time.Time) {
	p.line(fmt.Sprintf("%s in %.1fs", what, time.Since(start).Seconds()))
}

// envValue is the value of variable k in env ("" if unset).
func envValue(env []string, k string) string {
	v := ""
	for _, kv := range env {
		if key, val, ok := strings.Cut(kv, "="); ok && key == k {
			v = val
		}
	}
	return v
}
