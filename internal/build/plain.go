package build

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"unicode"
)

// One build instead of two (create --deb, docs/deb.md): RunPlain builds
// the pre tree exactly as the project's own build does, only logging what
// it compiles and links, and Recompile then makes the post tree as a copy
// of the built pre tree with the patch applied and compiles again, in both
// trees, only the units the patch affects, with the flags the object
// differ needs. Every other object stays the plain build's, byte-identical
// in pre and post, so the differ skips it.

// plainInfo is what Recompile needs of the plain build.
type plainInfo struct {
	src     string   // the source tree pre is a copy of (the prefix map's target)
	inc     string   // directory holding livesplice.h
	cc, cxx string   // the real compilers
	env     []string // the base environment of the build and recompiles (Options.Env); nil: the caller's
	// ran is set for a tree RunPlain built (and its clones): only such a
	// tree is the project's own build, which Recompile and Clone take on.
	ran bool
}

// isPlain says whether RunPlain built t (or t is a clone of such a tree).
func (t *Tree) isPlain() bool { return t != nil && t.plain != nil && t.plain.ran }

// RunPlain makes WorkDir/pre, a cleaned copy of Src, and builds it with
// BuildCmd through the compiler wrapper in plain mode: the real compiler
// runs with the build's arguments as they are, in the caller's environment
// minus CC, CXX, SOURCE_DATE_EPOCH and LIVESPLICE_* (the build is the
// project's own, its outputs byte-identical to a build without livesplice),
// and every compile and link is logged. Patch is ignored: Recompile takes
// the tree on from there.
func RunPlain(ctx context.Context, o Options) (*Tree, error) {
	paths, err := o.resolve()
	if err != nil {
		return nil, err
	}
	src, work, self, realCC, realCXX := paths.src, paths.work, paths.self, paths.cc, paths.cxx

	p := &progress{w: o.Progress}
	pre := filepath.Join(work, "pre")
	if _, err := os.Lstat(pre); err == nil {
		return nil, fmt.Errorf("build: %s already exists", pre)
	}
	start := p.start("copying source tree")
	if err := copyTree(src, pre, copyOpts{skipGit: true, clean: true, skip: work}); err != nil {
		return nil, fmt.Errorf("build: copying %s: %w", src, err)
	}
	p.done("copied source tree", start)

	bin, incDir, err := toolDirs(work, self)
	if err != nil {
		return nil, err
	}
	log := filepath.Join(work, "pre.log")
	os.Remove(log)
	start = p.start("building pre tree (plain)")
	env := plainEnv(o.Env, bin, pre, realCC, realCXX, log)
	if err := runBuild(ctx, pre, o.BuildCmd, env, filepath.Join(work, "pre.out")); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("build: %w", ctx.Err())
		}
		return nil, fmt.Errorf("build: build of pre tree (%s) failed: %w", pre, err)
	}
	p.done("built pre tree", start)
	t, n, err := readTree(pre, log)
	if err != nil {
		return nil, fmt.Errorf("build: pre tree: %w", err)
	}
	if n == 0 {
		return nil, fmt.Errorf("build: the build of %s compiled nothing through livesplice's compiler wrapper: use $(CC)/cc/gcc from PATH, not an absolute compiler path", pre)
	}
	t.plain = &plainInfo{src: src, inc: incDir, cc: realCC, cxx: realCXX, env: o.Env, ran: true}
	return t, nil
}

// plainEnv is the environment of a plain build: the caller's, minus what
// would make the build differ from the project's own (a compiler or a
// timestamp of the caller's choosing), with the wrapper first on PATH in
// plain mode.
func plainEnv(base []string, bin, root, realCC, realCXX, log string) []string {
	path := os.Getenv("PATH")
	if base == nil {
		base = os.Environ()
	} else {
		path = envValue(base, "PATH")
	}
	var env []string
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "CC", k == "CXX", k == "SOURCE_DATE_EPOCH", k == "PWD", k == "PATH", strings.HasPrefix(k, "LIVESPLICE_"):
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"PATH="+bin+string(os.PathListSeparator)+path,
		"PWD="+root,
		envLog+"="+log,
		envPlain+"=1",
		envTree+"="+root,
		envRealCC+"="+realCC,
		envRealCXX+"="+realCXX,
	)
}

// RecompileOptions say what Recompile applies and for which outputs.
type RecompileOptions struct {
	Patch    string    // unified diff, applied with `patch -p1` in the post tree
	Progress io.Writer // nil: silent
	// Outputs, if set, limits the work to the units linked into the
	// outputs (by Rel) it accepts: the caller diffs only those. Nil: every
	// output's units.
	Outputs func(rel string) bool
}

// Recompile makes post (a copy of pre's built tree, next to it) with the
// patch applied and compiles the units the patch affects again, in both
// trees, from the directory and with the arguments the build used, plus
// the wrapper's flags (function and data sections, -g, the prefix map,
// livesplice.h), without the build's dependency outputs (-MD, -MF, ...),
// writing over each unit's object. Only units linked into an output
// (o.Outputs) are considered; one is affected if the patch changes its
// source or any file its compile reads (gcc -M in post, run for every
// considered unit whose source the patch does not change: a .c file may
// be #included by another unit). A source compiled and linked in one step
// gets its object (named as gcc names a kept one) in both trees and in its
// output's objects (pre's lists are updated in place: Result.Pre is pre).
// Outputs are not linked again: pre's are the plain build's, and post's
// are copies of them.
func Recompile(ctx context.Context, pre *Tree, o RecompileOptions) (*Result, error) {
	if !pre.isPlain() {
		return nil, errors.New("build: Recompile needs a tree made by RunPlain")
	}
	if o.Patch == "" {
		return nil, errors.New("build: no patch given")
	}
	patchFile, err := patchPath(o.Patch)
	if err != nil {
		return nil, err
	}
	p := &progress{w: o.Progress}
	postRoot := filepath.Join(filepath.Dir(pre.Root), "post")
	if _, err := os.Lstat(postRoot); err == nil {
		return nil, fmt.Errorf("build: %s already exists", postRoot)
	}
	start := p.start("copying built pre tree to post")
	if err := copyTree(pre.Root, postRoot, copyOpts{}); err != nil {
		return nil, fmt.Errorf("build: copying %s: %w", pre.Root, err)
	}
	p.done("copied built pre tree", start)
	start = p.start("applying patch")
	if err := applyPatch(ctx, postRoot, patchFile); err != nil {
		return nil, err
	}
	p.done("applied patch", start)

	touched, err := changedFiles(pre.Root, postRoot)
	if err != nil {
		return nil, fmt.Errorf("build: files the patch changed: %w", err)
	}
	rc := &recompiler{pre: pre, post: postRoot}
	cands := pre.linkedUnits(o.Outputs)
	start = p.start(fmt.Sprintf("finding which of %d units the patch affects", len(cands)))
	affected, unread, err := rc.affected(ctx, cands, touched)
	if err != nil {
		return nil, err
	}
	p.done(fmt.Sprintf("found %d of %d units affected", len(affected), len(cands)), start)
	if len(unread) > 0 {
		p.line("patched files no compile of the outputs reads (not rebuilt): " + strings.Join(unread, ", "))
	}
	post := &Tree{Root: postRoot, Objects: slices.Clone(pre.Objects), plain: pre.plain}
	for _, o := range pre.Outputs {
		o.Objects = slices.Clone(o.Objects)
		post.Outputs = append(post.Outputs, o)
	}
	if len(affected) > 0 {
		var names []string
		for _, u := range affected {
			names = append(names, pre.relOrAbs(u.obj))
		}
		start = p.start(fmt.Sprintf("recompiling %d units in pre and post: %s", len(affected), strings.Join(names, ", ")))
		if err := rc.compileAll(ctx, affected); err != nil {
			return nil, err
		}
		p.done("recompiled", start)
	}
	for _, u := range affected {
		if u.link != "" {
			addInline(pre, u, pre.Root)
			addInline(post, u, pre.Root)
		}
	}
	return &Result{Pre: pre, Post: post, Unread: unread}, nil
}

// relOrAbs is p relative to the tree's root, or p itself outside it.
func (t *Tree) relOrAbs(p string) string {
	if r, ok := t.rel(p); ok {
		return r
	}
	return p
}

// addInline adds a compile-and-link unit's object to a tree's objects and
// its output's objects; u's paths are in the tree rooted at from.
func addInline(t *Tree, u unit, from string) {
	obj, src := reroot(u.obj, from, t.Root), reroot(u.source, from, t.Root)
	rel, ok := t.rel(obj)
	if !ok {
		return
	}
	s, ok := t.rel(src)
	if !ok {
		s = filepath.ToSlash(src)
	}
	if !slices.ContainsFunc(t.Objects, func(o Object) bool { return o.Rel == rel }) {
		t.Objects = append(t.Objects, Object{Rel: rel, Source: s})
		sort.Slice(t.Objects, func(i, j int) bool { return t.Objects[i].Rel < t.Objects[j].Rel })
	}
	for i := range t.Outputs {
		if t.Outputs[i].Rel == u.link && !slices.Contains(t.Outputs[i].Objects, rel) {
			t.Outputs[i].Objects = append(t.Outputs[i].Objects, rel)
			sort.Strings(t.Outputs[i].Objects)
		}
	}
}

// changedFiles lists (relative, slash-separated, sorted) the files that
// differ between two trees: present in one only, or with other contents.
// post was copied from pre with mtimes kept, so a file whose size and
// mtime are pre's is pre's.
func changedFiles(pre, post string) ([]string, error) {
	set := map[string]bool{}
	walk := func(a, b string) error {
		return filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				return nil
			}
			rel, err := filepath.Rel(a, p)
			if err != nil {
				return err
			}
			fa, err := d.Info()
			if err != nil {
				return err
			}
			fb, err := os.Lstat(filepath.Join(b, rel))
			switch {
			case err != nil:
				set[filepath.ToSlash(rel)] = true
			case fa.Mode().Type() != fb.Mode().Type():
				set[filepath.ToSlash(rel)] = true
			case fa.Mode().IsRegular() && (fa.Size() != fb.Size() || !fa.ModTime().Equal(fb.ModTime())):
				x, err1 := os.ReadFile(p)
				y, err2 := os.ReadFile(filepath.Join(b, rel))
				if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
					set[filepath.ToSlash(rel)] = true
				}
			case fa.Mode()&fs.ModeSymlink != 0:
				x, _ := os.Readlink(p)
				y, _ := os.Readlink(filepath.Join(b, rel))
				if x != y {
					set[filepath.ToSlash(rel)] = true
				}
			}
			return nil
		})
	}
	if err := walk(post, pre); err != nil {
		return nil, err
	}
	// Files the patch deleted.
	if err := walk(pre, post); err != nil {
		return nil, err
	}
	var out []string
	for f := range set {
		out = append(out, f)
	}
	sort.Strings(out)
	return out, nil
}

type recompiler struct {
	pre  *Tree
	post string // post's root
}

// linkedUnits are the tree's units linked into the outputs keep accepts
// (nil: all), in the tree's order.
func (t *Tree) linkedUnits(keep func(rel string) bool) []unit {
	linked := map[string]bool{}
	outs := map[string]bool{}
	for _, o := range t.Outputs {
		if keep != nil && !keep(o.Rel) {
			continue
		}
		outs[o.Rel] = true
		for _, ob := range o.Objects {
			linked[ob] = true
		}
	}
	var us []unit
	for _, u := range t.units {
		if u.link != "" {
			if outs[u.link] {
				us = append(us, u)
			}
			continue
		}
		if rel, ok := t.rel(u.obj); ok && linked[rel] {
			us = append(us, u)
		}
	}
	return us
}

// affected returns the units of cands that the touched files (relative to
// the roots) affect, in order, and the touched files no compile of cands
// reads.
func (rc *recompiler) affected(ctx context.Context, cands []unit, touched []string) ([]unit, []string, error) {
	pre := rc.pre
	if len(touched) == 0 {
		return nil, nil, nil
	}
	isTouched := map[string]bool{}
	for _, f := range touched {
		isTouched[f] = true
	}
	hit := make([]bool, len(cands))
	read := map[string]bool{}
	var rest []int
	for i, u := range cands {
		if rel, ok := pre.rel(u.source); ok && isTouched[rel] {
			hit[i] = true
			read[rel] = true
			continue
		}
		rest = append(rest, i)
	}
	deps := make([][]string, len(rest))
	errs := make([]error, len(rest))
	parallel(ctx, len(rest), func(j int) {
		deps[j], errs[j] = rc.deps(ctx, cands[rest[j]])
	})
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("build: %w", err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	for j, i := range rest {
		for _, d := range deps[j] {
			if isTouched[d] {
				hit[i] = true
				read[d] = true
			}
		}
	}
	var unread []string
	for _, f := range touched {
		if !read[f] {
			unread = append(unread, f)
		}
	}
	var out []unit
	for i, u := range cands {
		if !hit[i] {
			continue
		}
		if u.obj == "" {
			return nil, nil, fmt.Errorf("recompile %s: it is compiled and linked into %s in one step, and the object gcc would keep for it cannot be named (another source of the same name in that step, or the name lies outside the tree or is taken)", pre.relOrAbs(u.source), u.link)
		}
		out = append(out, u)
	}
	return out, unread, nil
}

// deps lists the files in the tree (relative to the root) that u's compile
// reads in post, by gcc -M.
func (rc *recompiler) deps(ctx context.Context, u unit) ([]string, error) {
	pl := rc.pre.plain
	args := unitArgs(u.args, u.cwd, u.source)
	for i := range args {
		args[i] = reroot(args[i], rc.pre.Root, rc.post)
	}
	args = append(args, compileFlagsInc(rc.post, pl.src, pl.inc)...)
	args = append(args, "-M")
	cwd := reroot(u.cwd, rc.pre.Root, rc.post)
	cmd := exec.CommandContext(ctx, pl.compiler(u.compiler), args...)
	cmd.Dir = cwd
	cmd.Env = compileEnv(pl.env, u.env, cwd)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("recompile %s: dependencies (gcc -M in %s): %v: %s", rc.pre.relOrAbs(u.source), cwd, err, LastLines(stderr.String(), tailLines))
	}
	var out []string
	for _, d := range parseDeps(stdout.String()) {
		if r, err := filepath.Rel(rc.post, absIn(cwd, d)); err == nil && !strings.HasPrefix(r, "..") {
			out = append(out, filepath.ToSlash(r))
		}
	}
	return out, nil
}

// compileAll compiles every unit in both trees, two per CPU at once.
func (rc *recompiler) compileAll(ctx context.Context, us []unit) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, 2*len(us))
	parallel(cctx, len(errs), func(i int) {
		root, name := rc.pre.Root, "pre"
		if i%2 == 1 {
			root, name = rc.post, "post"
		}
		if errs[i] = rc.compile(cctx, us[i/2], root, name); errs[i] != nil {
			cancel()
		}
	})
	if ctx.Err() != nil {
		return fmt.Errorf("build: %w", ctx.Err())
	}
	// The first failure is the one worth reporting: others were killed.
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	return errors.Join(errs...)
}

// compile compiles u in the tree at root (pre's or post's), over its
// object.
func (rc *recompiler) compile(ctx context.Context, u unit, root, name string) error {
	if err := rc.pre.plain.compileTo(ctx, u, rc.pre.Root, root, reroot(u.obj, rc.pre.Root, root), nil); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("recompile %s in %s tree: %w", rc.pre.relOrAbs(u.obj), name, ctx.Err())
		}
		return fmt.Errorf("recompile %s in %s tree (%s): %w", rc.pre.relOrAbs(u.obj), name, root, err)
	}
	return nil
}

// parallel runs f(0..n-1), as many at once as there are CPUs, and returns
// when all have returned; after ctx ends it starts no more.
func parallel(ctx context.Context, n int, f func(int)) {
	sem := make(chan struct{}, runtime.NumCPU())
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			f(i)
		})
	}
	wg.Wait()
}

// compiler is the real compiler for the name the build called.
func (pl *plainInfo) compiler(name string) string {
	if (strings.HasSuffix(name, "c++") || strings.HasSuffix(name, "g++")) && pl.cxx != "" {
		return pl.cxx
	}
	return pl.cc
}

// compileEnv is the environment of a recompile in cwd: base (nil: the
// caller's), with the compile's compilerEnv variables as the build had them
// (SOURCE_DATE_EPOCH pinned to 0 if it had none, so pre and post agree)
// and nothing that makes gcc write dependency files.
func compileEnv(base, recorded []string, cwd string) []string {
	drop := map[string]bool{"PWD": true, "DEPENDENCIES_OUTPUT": true, "SUNPRO_DEPENDENCIES": true}
	for _, k := range compilerEnv {
		drop[k] = true
	}
	if base == nil {
		base = os.Environ()
	}
	var env []string
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if !drop[k] && !strings.HasPrefix(k, "LIVESPLICE_") {
			env = append(env, kv)
		}
	}
	env = append(env, recorded...)
	if !slices.ContainsFunc(recorded, func(kv string) bool { return strings.HasPrefix(kv, "SOURCE_DATE_EPOCH=") }) {
		env = append(env, "SOURCE_DATE_EPOCH=0")
	}
	return append(env, "PWD="+cwd)
}

// takesValue reports whether a gcc option's value is the next argument.
func takesValue(a string) bool {
	switch a {
	case "-o", "-x", "-L", "-l", "-dumpdir", "-dumpbase", "-dumpbase-ext":
		return true
	}
	return separateArg[a]
}

// unitArgs returns the arguments that compile source alone, from a compile
// or compile-and-link's arguments: without the output (-o), the dependency
// outputs (-M, -MM, -MD, -MMD, -MF, -MT, -MQ, -MP, -MG, -Wp,-M...), the
// other inputs (sources, objects, archives, libraries) and the link's own
// options (-Wl, -Xlinker, -L, -l, -shared, -static, -pie, -no-pie,
// -rdynamic).
func unitArgs(args []string, cwd, source string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "-" || !strings.HasPrefix(a, "-") {
			if absIn(cwd, a) == source {
				out = append(out, a)
			}
			continue
		}
		switch a {
		case "-o", "-MF", "-MT", "-MQ", "-Xlinker", "-L", "-l":
			i++
			continue
		case "-M", "-MM", "-MD", "-MMD", "-MP", "-MG", "-shared", "-static", "-pie", "-no-pie", "-rdynamic":
			continue
		}
		if strings.HasPrefix(a, "-o") || strings.HasPrefix(a, "-MF") || strings.HasPrefix(a, "-MT") ||
			strings.HasPrefix(a, "-MQ") || strings.HasPrefix(a, "-Wp,-M") || strings.HasPrefix(a, "-Wl,") ||
			strings.HasPrefix(a, "-L") || strings.HasPrefix(a, "-l") {
			continue
		}
		out = append(out, a)
		if takesValue(a) && i+1 < len(args) {
			i++
			out = append(out, args[i])
		}
	}
	return out
}

// reroot replaces the directory from (an absolute path) in s (a path, or an
// argument holding one: -I/x, -ffile-prefix-map=/x=.) by to, wherever from
// is not the start of a longer name (/x in /xy).
func reroot(s, from, to string) string {
	if from == to || from == "" {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, from)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		end := i + len(from)
		whole := end == len(s) || !isNameByte(s[end])
		b.WriteString(s[:i])
		if whole {
			b.WriteString(to)
		} else {
			b.WriteString(from)
		}
		s = s[end:]
	}
}

func isNameByte(c byte) bool {
	return c == '_' || c == '-' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// parseDeps returns the prerequisites of the make rule gcc -M prints.
func parseDeps(s string) []string {
	s = strings.ReplaceAll(s, "\\\r\n", " ")
	s = strings.ReplaceAll(s, "\\\n", " ")
	// The target ends at the first colon followed by white space.
	for i := 0; i < len(s); i++ {
		if s[i] == ':' && (i+1 == len(s) || s[i+1] == ' ' || s[i+1] == '\t' || s[i+1] == '\n') {
			s = s[i+1:]
			break
		}
	}
	var out []string
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s) && (s[i+1] == ' ' || s[i+1] == '#' || s[i+1] == '\\'):
			cur.WriteByte(s[i+1])
			i++
		case c == '$' && i+1 < len(s) && s[i+1] == '$':
			cur.WriteByte('$')
			i++
		case c == ' ' || c == '\t' || c == '\n':
			flush()
		default:
			cur.WriteByte(c)
		}
	}
	flush()
	return out
}

// LastLines is the last n lines of s, its trailing blank lines and
// spaces dropped: the tail of a tool's output for an error message.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRightFunc(s, unicode.IsSpace), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
