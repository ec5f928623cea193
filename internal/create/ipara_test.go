package create

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"livesplice/internal/build"
	"livesplice/internal/update"
)

// The test binary doubles as the compiler wrapper of create's builds.
func TestMain(m *testing.M) {
	if build.IsWrapperInvocation() {
		os.Exit(build.WrapperMain())
	}
	os.Exit(m.Run())
}

// createFrom writes prog.c and a Makefile into a tree, makes the patch
// that turns prog.c into post, and runs create.
func createFrom(t *testing.T, pre, post string) (*update.File, error) {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no gcc")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	for p, s := range map[string]string{
		"src/prog.c": pre, "src/Makefile": "prog: prog.c\n\t$(CC) -O2 -g -o prog prog.c\n",
		"a/prog.c": pre, "b/prog.c": post,
	} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("diff", "-u", "a/prog.c", "b/prog.c")
	cmd.Dir = dir
	diff, _ := cmd.Output()
	patch := filepath.Join(dir, "fix.patch")
	if err := os.WriteFile(patch, diff, 0o644); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Create(context.Background(), Options{Src: src, Patch: patch, ID: "fix", Self: self})
}

func replacedNames(f *update.File) []string {
	var out []string
	for _, tg := range f.Targets {
		for _, fn := range tg.Functions {
			if fn.Status == update.StatusReplaced {
				out = append(out, fn.Name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// why is fn's reasons in f.
func why(f *update.File, fn string) []update.Reason {
	for _, tg := range f.Targets {
		for _, x := range tg.Functions {
			if x.Name == fn {
				return x.Why
			}
		}
	}
	return nil
}

// stubbed reports whether fn's post code is a preserving stub.
func stubbed(f *update.File, fn string) bool {
	for _, tg := range f.Targets {
		for _, x := range tg.Functions {
			if x.Name == fn {
				return strings.HasPrefix(tg.Sections[x.Section].Name, ".text.livesplice.preserve.")
			}
		}
	}
	return false
}

const ipaProg = `#include <stdio.h>
#include <stdlib.h>

struct conn {
	int id;
	int requests;
};

static struct conn conns[4];

static __attribute__((noinline)) int handle(struct conn *c)
{
	c->requests++;
	return c->requests * 2;
}

static __attribute__((noinline)) unsigned helper(int n)
{
	unsigned k = n * 7 + 1;
	int r = handle(&conns[n & 3]);
	return k * r + k;
}

static __attribute__((noinline)) unsigned report(int n)
{
	return helper(n) + 1;
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin))
		printf("%u %u\n", helper(atoi(line)), report(atoi(line)));
	return 0;
}
`

// handle now calls puts: main and helper change only through -fipa-ra.
// main stays as it runs; handle is entered through a preserving stub.
// helper changed only that way too, but report, which the fix really
// changes, calls it: new code must not run helper's old register use, so
// helper is replaced after all.
func TestIPARAKeepsCallers(t *testing.T) {
	post := strings.Replace(ipaProg, "\tc->requests++;", "\tc->requests += puts(\"\") > 0;", 1)
	post = strings.Replace(post, "return helper(n) + 1;", "return helper(n) + 2;", 1)
	f, err := createFrom(t, ipaProg, post)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(replacedNames(f), ","); got != "handle,helper,report" {
		t.Errorf("replaced %s, want handle,helper,report (main kept)", got)
	}
	if !stubbed(f, "handle") {
		t.Error("handle is not entered through a preserving stub")
	}
	// helper says why: only -fipa-ra changed it, and report's new code
	// refers to it.
	if w := why(f, "helper"); len(w) == 0 || w[0] != (update.Reason{Kind: update.ReasonIPARA, Detail: "report"}) {
		t.Errorf("helper's reasons %v, want ipa-ra report first", w)
	}
	if w := why(f, "handle"); slices.ContainsFunc(w, func(r update.Reason) bool { return r.Kind == update.ReasonIPARA }) {
		t.Errorf("handle's reasons %v: its own change is no -fipa-ra one", w)
	}
	// Without report's call, nothing new calls helper: it stays as it
	// runs, like main.
	pre := strings.Replace(ipaProg, "return helper(n) + 1;", "return n + 1;", 1)
	post = strings.Replace(pre, "\tc->requests++;", "\tc->requests += puts(\"\") > 0;", 1)
	if f, err = createFrom(t, pre, post); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(replacedNames(f), ","); got != "handle" {
		t.Errorf("replaced %s, want handle (main and helper kept)", got)
	}
}

const varargsProg = `#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>

static int total;

static __attribute__((noinline)) int handle(int n, ...)
{
	va_list ap;
	va_start(ap, n);
	total += va_arg(ap, int);
	va_end(ap);
	return total * 2;
}

int main(void)
{
	char line[64];
	unsigned sum = 0;
	while (fgets(line, sizeof line, stdin)) {
		int n = atoi(line) & 3;
		unsigned k = n * 7 + 1;
		int r = handle(n + 1, n);
		sum += k * r;
		printf("%d %u\n", r, sum + k);
	}
	return 0;
}
`

// A callee with a variable argument list cannot be entered through a stub
// that moves the stack: create refuses, naming the kept caller.
func TestIPARARefusesVarargs(t *testing.T) {
	post := strings.Replace(varargsProg, "\ttotal += va_arg(ap, int);", "\ttotal += va_arg(ap, int) + (puts(\"\") < 0);", 1)
	_, err := createFrom(t, varargsProg, post)
	if err == nil || !strings.Contains(err.Error(), "main: only GCC's -fipa-ra changed its code") || !strings.Contains(err.Error(), "variable argument list") {
		t.Fatalf("want a refusal naming main and the variable argument list, got %v", err)
	}
}

// compileObj compiles C source src with the wrapper's code flags and
// returns the object's bytes.
func compileObj(t *testing.T, src string) []byte {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no gcc")
	}
	dir := t.TempDir()
	c := filepath.Join(dir, "prog.c")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("gcc", "-O2", "-g", "-ffunction-sections", "-fdata-sections", "-c", "-o", "prog.o", "prog.c")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "prog.o"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// An object no logged compile made cannot be compiled with -fno-ipa-ra:
// every changed function is replaced, and the progress says the check
// was not made instead of passing over it in silence.
func TestIPARANoUnitSaysSo(t *testing.T) {
	post := strings.Replace(ipaProg, "\tc->requests++;", "\tc->requests += puts(\"\") > 0;", 1)
	pre, postData := compileObj(t, ipaProg), compileObj(t, post)
	dir := t.TempDir()
	res := &build.Result{Pre: &build.Tree{Root: dir}, Post: &build.Tree{Root: dir}}
	var buf strings.Builder
	plan, err := planIPARA(context.Background(), res, "prog.o", pre, postData, t.TempDir(), &buf)
	if err != nil || plan != nil {
		t.Fatalf("plan %+v, err %v: want no plan and no error", plan, err)
	}
	if !strings.Contains(buf.String(), "prog.o: -fipa-ra check not made") {
		t.Errorf("progress %q does not say the check was not made", buf.String())
	}
}

// Changes no replaced function reaches from another are independent:
// nothing can have changed through -fipa-ra alone, so no extra compile is
// tried (here it would fail and say so).
func TestIPARAIndependentSkipsCompile(t *testing.T) {
	const prog = `int __attribute__((noinline)) f(int x) { return x * 3; }
int __attribute__((noinline)) g(int x) { return x + 5; }
`
	post := strings.NewReplacer("x * 3", "x * 4", "x + 5", "x + 6").Replace(prog)
	pre, postData := compileObj(t, prog), compileObj(t, post)
	dir := t.TempDir()
	res := &build.Result{Pre: &build.Tree{Root: dir}, Post: &build.Tree{Root: dir}}
	var buf strings.Builder
	plan, err := planIPARA(context.Background(), res, "prog.o", pre, postData, t.TempDir(), &buf)
	if err != nil || plan != nil {
		t.Fatalf("plan %+v, err %v: want no plan and no error", plan, err)
	}
	if buf.Len() != 0 {
		t.Errorf("a compile was tried for independent changes: %q", buf.String())
	}
}
