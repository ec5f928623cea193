package build

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

// IsWrapperInvocation reports whether this process was started as the
// compiler wrapper: under a compiler's name, inside a livesplice build.
func IsWrapperInvocation() bool {
	if len(os.Args) == 0 || os.Getenv(envLog) == "" {
		return false
	}
	base := filepath.Base(os.Args[0])
	for _, n := range wrapperNames {
		if base == n {
			return true
		}
	}
	return false
}

// WrapperMain runs the real compiler for this invocation, adding the flags
// the object differ needs to compiles and links, logs what was built and
// returns the real compiler's exit status. Without LIVESPLICE_WRAP_LOG it
// only passes the arguments through.
func WrapperMain() int {
	name := "cc"
	if len(os.Args) > 0 {
		name = filepath.Base(os.Args[0])
	}
	args := os.Args[1:]
	real, err := realCompiler(name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "livesplice compiler wrapper: %v\n", err)
		return 127
	}
	logPath := os.Getenv(envLog)
	if logPath == "" {
		return runCompiler(real, args)
	}
	inv := parseArgs(args)
	cwd, err := os.Getwd()
	if err != nil {
		fmt.Fprintf(os.Stderr, "livesplice compiler wrapper: %v\n", err)
		return 1
	}
	tree, src := os.Getenv(envTree), os.Getenv(envSrc)
	inv.plain = os.Getenv(envPlain) != ""
	status := runCompiler(real, inv.wrappedArgs(tree, src))
	if status != 0 || inv.mode == modePass {
		// Failed compiles (configure probes, or a real error that fails the
		// build anyway) built nothing worth recording.
		return status
	}
	recs := inv.records(cwd, tree, args)
	cenv := compilerEnviron()
	for i := range recs {
		recs[i].Compiler = name
		recs[i].Env = cenv
	}
	var buf []byte
	for _, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			fmt.Fprintf(os.Stderr, "livesplice compiler wrapper: %v\n", err)
			return 1
		}
		buf = append(append(buf, b...), '\n')
	}
	if err := appendLog(logPath, buf); err != nil {
		// Better to fail the build than to silently miss an object.
		fmt.Fprintf(os.Stderr, "livesplice compiler wrapper: writing log: %v\n", err)
		return 1
	}
	return 0
}

// realCompiler picks the compiler the wrapper stands for.
func realCompiler(name string) (string, error) {
	env, fallback := envRealCC, "gcc"
	if strings.HasSuffix(name, "c++") || strings.HasSuffix(name, "g++") {
		env, fallback = envRealCXX, "g++"
	}
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	self, _ := os.Executable()
	p, err := findReal(fallback, self)
	if err != nil {
		return "", fmt.Errorf("no real compiler for %s (%s unset): %v", name, env, err)
	}
	return p, nil
}

// appendLog writes buf with a single O_APPEND write, so that records from
// parallel compiles do not interleave.
func appendLog(path string, buf []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	n, err := f.Write(buf)
	if err == nil && n != len(buf) {
		err = errors.New("short write")
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// runCompiler runs the real compiler with our stdio and returns its exit
// status. Termination signals are forwarded so that the compiler, not the
// wrapper, decides how to die.
func runCompiler(real string, args []string) int {
	cmd := exec.Command(real, args...)
	cmd.Args[0] = real
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "livesplice compiler wrapper: %v\n", err)
		return 127
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	fmt.Fprintf(os.Stderr, "livesplice compiler wrapper: %v\n", err)
	return 1
}

const (
	modePass    = iota // preprocess, assemble-only, queries: run unchanged
	modeCompile        // -c
	modeLink           // produce an executable or shared library
)

// invocation is what the wrapper understands of a gcc command line.
type invocation struct {
	mode     int
	output   string   // -o as given, "" if none
	sources  []string // source inputs as given
	objects  []string // .o inputs
	archives []string // .a inputs
	libs     []string // -l names
	libDirs  []string // -L dirs
	shared   bool
	static   bool
	dumpdir  string // -dumpdir as given
	dumpbase bool   // -dumpbase/-dumpbase-ext given: kept object names are not predictable
	plain    bool   // plain mode: the arguments run as given, nothing kept
	args     []string
}

// separateArg lists gcc options whose value may be the next argument, so
// that the value is not mistaken for an input file.
var separateArg = map[string]bool{
	"-I": true, "-D": true, "-U": true, "-include": true, "-imacros": true,
	"-idirafter": true, "-iprefix": true, "-iwithprefix": true,
	"-iwithprefixbefore": true, "-isystem": true, "-isysroot": true,
	"-iquote": true, "-imultilib": true, "-imultiarch": true,
	"-MF": true, "-MT": true, "-MQ": true, "-Xlinker": true,
	"-Xassembler": true, "-Xpreprocessor": true, "-u": true, "-T": true,
	"-z": true, "-e": true, "-aux-info": true, "--param": true, "-A": true,
	"-B": true, "-wrapper": true, "--sysroot": true,
}

var sourceExts = map[string]bool{
	".c": true, ".cc": true, ".cpp": true, ".cxx": true, ".c++": true,
	".cp": true, ".C": true, ".CPP": true, ".s": true, ".S": true, ".sx": true,
	".i": true, ".ii": true,
}

var sourceLangs = map[string]bool{
	"c": true, "c++": true, "assembler": true, "assembler-with-cpp": true,
	"cpp-output": true, "c++-cpp-output": true,
}

func parseArgs(args []string) *invocation {
	inv := &invocation{args: args}
	var c, s, e, m, md, syntaxOnly bool
	lang := ""
	others := 0
	for i := 0; i < len(args); i++ {
		a := args[i]
		next := func() string {
			if i+1 < len(args) {
				i++
				return args[i]
			}
			return ""
		}
		if a == "-" || !strings.HasPrefix(a, "-") {
			switch {
			case a == "-":
				// stdin has no path to log, but it is an input.
				others++
			case lang != "" && lang != "none":
				if sourceLangs[lang] {
					inv.sources = append(inv.sources, a)
				} else {
					others++
				}
			case sourceExts[filepath.Ext(a)]:
				inv.sources = append(inv.sources, a)
			case strings.HasSuffix(a, ".o"):
				inv.objects = append(inv.objects, a)
			case strings.HasSuffix(a, ".a"):
				inv.archives = append(inv.archives, a)
			default:
				others++
			}
			continue
		}
		switch {
		case a == "-o":
			inv.output = next()
		case strings.HasPrefix(a, "-o"):
			inv.output = a[2:]
		case a == "-c":
			c = true
		case a == "-S":
			s = true
		case a == "-E":
			e = true
		case a == "-M" || a == "-MM":
			m = true
		case a == "-MD" || a == "-MMD":
			md = true
		case a == "-fsyntax-only":
			syntaxOnly = true
		case a == "-shared":
			inv.shared = true
		case a == "-static":
			inv.static = true
		case a == "-x":
			lang = next()
		case strings.HasPrefix(a, "-x"):
			lang = a[2:]
		case a == "-L":
			inv.libDirs = append(inv.libDirs, next())
		case strings.HasPrefix(a, "-L"):
			inv.libDirs = append(inv.libDirs, a[2:])
		case a == "-l":
			inv.libs = append(inv.libs, next())
		case strings.HasPrefix(a, "-l"):
			inv.libs = append(inv.libs, a[2:])
		case a == "-dumpdir":
			inv.dumpdir = next()
		case a == "-dumpbase" || a == "-dumpbase-ext":
			inv.dumpbase = true
			next()
		case separateArg[a]:
			next()
		}
	}
	inputs := len(inv.sources) + len(inv.objects) + len(inv.archives) + others
	switch {
	case inputs == 0, e, m && !md, syntaxOnly, s:
		inv.mode = modePass
	case c:
		if len(inv.sources) > 0 {
			inv.mode = modeCompile
		}
	default:
		inv.mode = modeLink
	}
	return inv
}

// compileFlags are what the differ needs from every object: one section per
// function and datum, debug information (the layouts of types, compared
// pre against post; it changes no code), the paths of the original tree,
// so that pre and post objects only differ where the patch changed
// something, and livesplice.h on the include path, after the project's own
// directories.
func compileFlags(tree, src string) []string {
	return compileFlagsInc(tree, src, os.Getenv(envInclude))
}

// compileFlagsInc is compileFlags with livesplice.h's directory given.
func compileFlagsInc(tree, src, inc string) []string {
	f := []string{"-ffunction-sections", "-fdata-sections", "-g"}
	if tree != "" && src != "" {
		f = append(f, "-ffile-prefix-map="+tree+"="+src)
	}
	if inc != "" {
		f = append(f, "-idirafter", inc)
	}
	return f
}

// keepObjects reports whether a compile-and-link invocation is to keep its
// objects (never in plain mode, which adds nothing).
func (inv *invocation) keepObjects() bool {
	return !inv.plain && inv.uniqueStems()
}

// uniqueStems reports whether a compile-and-link invocation's objects can
// be named after its sources: gcc names them after the source's stem, so
// two sources with the same stem would overwrite each other and break the
// link.
func (inv *invocation) uniqueStems() bool {
	seen := map[string]bool{}
	for _, s := range inv.sources {
		st := stem(s)
		if seen[st] {
			return false
		}
		seen[st] = true
	}
	return len(inv.sources) > 0
}

// wrappedArgs returns the arguments to run the real compiler with. Our
// flags go last so that they beat the project's (-fno-function-sections).
// In plain mode they are the arguments as given.
func (inv *invocation) wrappedArgs(tree, src string) []string {
	if inv.plain {
		return inv.args
	}
	switch inv.mode {
	case modeCompile:
		return append(append([]string{}, inv.args...), compileFlags(tree, src)...)
	case modeLink:
		if !inv.keepObjects() {
			return inv.args
		}
		var out []string
		for _, a := range inv.args {
			// -pipe only earns a warning next to -save-temps.
			if a != "-pipe" {
				out = append(out, a)
			}
		}
		out = append(out, "-save-temps=obj")
		return append(out, compileFlags(tree, src)...)
	}
	return inv.args
}

// stem is a file's base name without its extension, as gcc uses it to name
// auxiliary outputs.
func stem(p string) string {
	b := filepath.Base(p)
	return strings.TrimSuffix(b, filepath.Ext(b))
}

// record is one line of the wrapper's log.
type record struct {
	Cwd      string   `json:"cwd"`
	Args     []string `json:"args"`               // as invoked, without our flags
	Compiler string   `json:"compiler,omitempty"` // the name invoked: cc, gcc, g++, ...
	Env      []string `json:"env,omitempty"`      // compilerEnv variables set for the compile (KEY=value)
	Kind     string   `json:"kind"`               // "compile" or "link"
	Output   string   `json:"output"`
	Sources  []string `json:"sources,omitempty"`
	Shared   bool     `json:"shared,omitempty"`
	Objects  []string `json:"objects,omitempty"` // link: .o inputs and kept objects
	Kept     []kept   `json:"kept,omitempty"`    // link: objects gcc kept for compiled sources
	Archives []string `json:"archives,omitempty"`
}

// compilerEnv are the environment variables that change what gcc makes of
// the same arguments; a recompile (Recompile) sets them as the build had
// them.
var compilerEnv = []string{
	"SOURCE_DATE_EPOCH", "CPATH", "C_INCLUDE_PATH", "CPLUS_INCLUDE_PATH",
	"OBJC_INCLUDE_PATH", "LIBRARY_PATH", "GCC_EXEC_PREFIX", "COMPILER_PATH",
}

// compilerEnviron returns the compilerEnv variables set here.
func compilerEnviron() []string {
	var env []string
	for _, k := range compilerEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

type kept struct {
	Object string `json:"object"`
	Source string `json:"source"`
}

func absIn(cwd, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(cwd, p)
}

// records turns a successful compile or link into log records, with every
// path made absolute.
func (inv *invocation) records(cwd, tree string, args []string) []record {
	switch inv.mode {
	case modeCompile:
		var recs []record
		for _, s := range inv.sources {
			out := inv.output
			if out == "" || len(inv.sources) > 1 {
				out = stem(s) + ".o"
			}
			recs = append(recs, record{
				Cwd: cwd, Args: args, Kind: "compile",
				Output:  absIn(cwd, out),
				Sources: []string{absIn(cwd, s)},
			})
		}
		return recs
	case modeLink:
		r := record{Cwd: cwd, Args: args, Kind: "link", Shared: inv.shared}
		out := inv.output
		if out == "" {
			out = "a.out"
		}
		r.Output = absIn(cwd, out)
		for _, o := range inv.objects {
			r.Objects = append(r.Objects, absIn(cwd, o))
		}
		if inv.keepObjects() {
			prefix := inv.dumpPrefix()
			for _, s := range inv.sources {
				obj := absIn(cwd, prefix+stem(s)+".o")
				if _, err := os.Stat(obj); err != nil && inv.dumpdir == "" && len(inv.sources) == 1 {
					// gcc 12 drops the prefix when the output is named
					// after the only source: "-o prog prog.c" keeps prog.o.
					obj = absIn(cwd, filepath.Join(filepath.Dir(r.Output), stem(s)+".o"))
				}
				// Only trust the predicted name if gcc really left it there.
				if fi, err := os.Stat(obj); err == nil && fi.Mode().IsRegular() {
					r.Kept = append(r.Kept, kept{Object: obj, Source: absIn(cwd, s)})
					r.Objects = append(r.Objects, obj)
				}
			}
		}
		for _, s := range inv.sources {
			r.Sources = append(r.Sources, absIn(cwd, s))
		}
		for _, a := range inv.archives {
			r.Archives = append(r.Archives, absIn(cwd, a))
		}
		r.Archives = append(r.Archives, inv.treeArchives(cwd, tree)...)
		return []record{r}
	}
	return nil
}

// dumpPrefix is the prefix gcc 12 gives auxiliary outputs such as the
// objects kept by -save-temps=obj: -dumpdir if given, else the output name
// plus "-", where the default output a.out counts as "a".
func (inv *invocation) dumpPrefix() string {
	switch {
	case inv.dumpdir != "":
		return inv.dumpdir
	case inv.output != "":
		return inv.output + "-"
	}
	return "a-"
}

// treeArchives resolves -l options the way ld does (every -L dir in order,
// lib<name>.so before lib<name>.a unless -static, -l:file literally) and
// returns the static archives found inside the tree. ld's built-in search
// dirs lie outside the tree, so they are not searched.
func (inv *invocation) treeArchives(cwd, tree string) []string {
	if tree == "" {
		return nil
	}
	var out []string
	for _, l := range inv.libs {
		var names []string
		switch {
		case strings.HasPrefix(l, ":"):
			names = []string{l[1:]}
		case inv.static:
			names = []string{"lib" + l + ".a"}
		default:
			names = []string{"lib" + l + ".so", "lib" + l + ".a"}
		}
	search:
		for _, d := range inv.libDirs {
			for _, n := range names {
				p := absIn(cwd, filepath.Join(d, n))
				if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
					if strings.HasSuffix(p, ".a") && inside(tree, p) {
						out = append(out, p)
					}
					break search
				}
			}
		}
	}
	return out
}

// inside reports whether p lies under dir.
func inside(dir, p string) bool {
	return strings.HasPrefix(p, dir+string(filepath.Separator))
}
