package objdiff

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"livesplice/internal/update"
)

// compile builds one C source into an object with the flags create uses.
func compile(t *testing.T, src, flags string) []byte {
	t.Helper()
	dir := t.TempDir()
	c := filepath.Join(dir, "x.c")
	os.WriteFile(c, []byte(src), 0o644)
	args := append(strings.Fields(flags), "-ffunction-sections", "-fdata-sections", "-c", c, "-o", filepath.Join(dir, "x.o"))
	if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "x.o"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func funcs(t *update.Target) (replaced, added []string) {
	for _, f := range t.Functions {
		if f.Status == update.StatusReplaced {
			replaced = append(replaced, f.Name)
		} else {
			added = append(added, f.Name)
		}
	}
	sort.Strings(replaced)
	sort.Strings(added)
	return
}

const ipaPre = `static __attribute__((noinline)) int leaf(int x) { return x * 3; }
int caller(int a, int b, int c, int d) { int t = a * 7 + b, u = c * d + a; return leaf(a) + t + leaf(u) * u + t; }
int other(int a) { return a + 1; }`

func TestDiff(t *testing.T) {
	cases := []struct {
		name      string
		pre, post string
		flags     string
		replaced  string // comma-separated, sorted
		added     string
		refuse    string // substring of the refusal
	}{
		{name: "one function of two",
			pre:  "int f(int x){return x+1;} int g(int x){return x*2;}",
			post: "int f(int x){return x+2;} int g(int x){return x*2;}", replaced: "f"},
		{name: "inlined static helper changes its callers",
			pre:   "static inline int h(int x){return x+1;} int f(int x){return h(x)*3;} int g(int x){return h(x)-1;} int k(int x){return x;}",
			post:  "static inline int h(int x){return x+5;} int f(int x){return h(x)*3;} int g(int x){return h(x)-1;} int k(int x){return x;}",
			flags: "-O2", replaced: "f,g"},
		// -fipa-ra (on at -O2): the pre caller keeps values in
		// call-clobbered registers that the pre leaf leaves alone; the
		// post leaf writes them. The post caller, compiled knowing that,
		// allocates other registers, so it differs and is replaced too.
		// Whole-unit rebuilds make this hold for every caller in the unit,
		// the only place IPA-RA looks (docs/reliability.md).
		{name: "ipa-ra: callers of a leaf that writes more registers",
			pre:   ipaPre,
			post:  strings.Replace(ipaPre, "return x * 3;", "int s = 0; for (int i = 0; i < x; i++) s += i * x; return x * 3 + s;", 1),
			flags: "-O2", replaced: "caller,leaf"},
		{name: "global's initial value from zero",
			pre: "int x; int f(void){return x++;}", post: "int x = 5; int f(void){return x++;}", refuse: "initial value of an existing variable changed"},
		{name: "global's initial value to zero",
			pre: "int x = 5; int f(void){return x++;}", post: "int x = 0; int f(void){return x++;}", refuse: "initial value of an existing variable changed"},
		{name: "static's initial value from zero",
			pre: "static int x; int f(void){return x++;}", post: "static int x = 3; int f(void){return x++;}", refuse: "initial value of an existing variable changed"},
		{name: "function-local static's initial value from zero",
			pre: "int f(void){static int n; return n++;}", post: "int f(void){static int n = 7; return n++;}", refuse: "initial value of an existing variable changed"},
		{name: "lto objects refused",
			pre: "int f(int x){return x+1;}", post: "int f(int x){return x+2;}",
			flags: "-O2 -flto", refuse: "built with -flto"},
		{name: "changed string literal",
			pre:  `const char *f(void){return "old";} const char *g(void){return "same";}`,
			post: `const char *f(void){return "new";} const char *g(void){return "same";}`, replaced: "f"},
		{name: "new string shifts the pool, unchanged users stay",
			pre:   `const char *g(void){return "same";} const char *f(void){return "a";}`,
			post:  `const char *n(void){return "inserted first";} const char *g(void){return "same";} const char *f(void){return "a";}`,
			added: "n"},
		{name: "new function and new globals",
			pre:   "int f(int x){return x;}",
			post:  "int hits; static int base = 42; static int h(int x){hits++; return x+base;} int f(int x){return h(x);}",
			flags: "-O0", replaced: "f", added: "h"},
		{name: "renumbered static local keeps its identity",
			pre:   "int a(void){static int n; return ++n;} int f(void){static int count; return ++count;}",
			post:  "int f(void){static int count; return (++count)*100;} int a(void){static int n; return ++n;}",
			flags: "-O2", replaced: "f"},
		{name: "initial value of an existing variable",
			pre:  "int limit = 5; int f(void){return limit;}",
			post: "int limit = 6; int f(void){return limit;}", refuse: "limit: initial value"},
		{name: "size of an existing variable",
			pre:  "int tab[4]; int f(int i){return tab[i];}",
			post: "int tab[8]; int f(int i){return tab[i];}", refuse: "tab: size"},
		{name: "thread-local variable",
			pre:  "int f(void){return 1;}",
			post: "__thread int t; int f(void){return ++t;}", refuse: "thread-local"},
		{name: "new constructor",
			pre:  "int f(void){return 1;}",
			post: "int f(void){return 1;} int v; __attribute__((constructor)) static void c(void){v = 1;}", refuse: "constructors"},
		{name: "comment only", pre: "int f(void){return 1;}", post: "/* x */ int f(void){return 1;}"},
		{name: "switch table",
			pre:   "int f(int x){switch(x){case 0:return 5;case 1:return 7;case 2:return 11;case 3:return 13;case 4:return 17;case 5:return 19;case 6:return 23;default:return 0;}} int g(void){return 0;}",
			post:  "int f(int x){switch(x){case 0:return 5;case 1:return 7;case 2:return 11;case 3:return 14;case 4:return 17;case 5:return 19;case 6:return 23;default:return 0;}} int g(void){return 0;}",
			flags: "-O2 -fno-pie", replaced: "f"},
		// libcare's fail_unpatch: at -O0 string literals share one
		// .rodata; a changed string moves the next one, whose user is the
		// same code reaching the same bytes.
		{name: "-O0: a string moved inside .rodata, its user stays",
			pre:   `int puts(const char *); void f(void){puts("Hello. This is an UNPATCHED version!");} void g(void){puts("same");}`,
			post:  `int puts(const char *); void f(void){puts("Hi");} void g(void){puts("same");}`,
			flags: "-O0", replaced: "f"},
		{name: "-O0 non-PIE: a string moved inside .rodata, its user stays",
			pre:   `int puts(const char *); void f(void){puts("Hello. This is an UNPATCHED version!");} void g(void){puts("same");}`,
			post:  `int puts(const char *); void f(void){puts("Hi");} void g(void){puts("same");}`,
			flags: "-O0 -fno-pie", replaced: "f"},
		{name: "-O0: a double constant moved, its user stays",
			pre:   `int puts(const char *); void f(void){puts("a long string that will shrink");} double g(double x){return x*1.25;}`,
			post:  `int puts(const char *); void f(void){puts("short");} double g(double x){return x*1.25;}`,
			flags: "-O0", replaced: "f"},
		{name: "-O0: the string changed, not moved",
			pre:   `int puts(const char *); void f(void){puts("one");} void g(void){puts("same");}`,
			post:  `int puts(const char *); void f(void){puts("one");} void g(void){puts("SAME");}`,
			flags: "-O0", replaced: "g"},
		{name: "-O0: a switch's jump table in its own section",
			pre:   "int h(void){return 1;} int f(int x){switch(x){case 0:return 5;case 1:return 7;case 2:return 11;case 3:return 13;case 4:return 17;case 5:return 19;default:return 0;}}",
			post:  "int h(void){return 2;} int f(int x){switch(x){case 0:return 5;case 1:return 7;case 2:return 11;case 3:return 13;case 4:return 17;case 5:return 19;default:return 0;}}",
			flags: "-O0", replaced: "h"},
		// GCC numbers its switch tables (CSWTCH.N) in order: a new one
		// before renumbers the next; its users stay out.
		{name: "renumbered switch table, same content",
			pre:   "int g(int x){switch(x){case 0:return 10;case 1:return 22;case 2:return 35;case 3:return 41;case 4:return 57;default:return 0;}}",
			post:  "int n(int x){switch(x){case 0:return 3;case 1:return 8;case 2:return 13;case 3:return 17;case 4:return 29;default:return 1;}} int g(int x){switch(x){case 0:return 10;case 1:return 22;case 2:return 35;case 3:return 41;case 4:return 57;default:return 0;}}",
			flags: "-O2", added: "n"},
		{name: "end of a static array in non-PIE code",
			pre:   "static int tab[64]; int f(int k){int s=0; for(int i=0;i<64;i++) s+=tab[i]; return s+k;} int *g(void){return tab;}",
			post:  "static int tab[64]; int f(int k){int s=0; for(int i=0;i<64;i++) s+=tab[i]; return s+2*k;} int *g(void){return tab;}",
			flags: "-O2 -fno-pie", replaced: "f"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			flags := c.flags
			if flags == "" {
				flags = "-O2"
			}
			b := NewBuilder("prog", "", "")
			err := b.AddObject("x.o", compile(t, c.pre, flags), compile(t, c.post, flags))
			if c.refuse != "" {
				var re *RefusedError
				if !errors.As(err, &re) || !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), c.refuse) {
					t.Fatalf("want refusal %q, got %v", c.refuse, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tg := b.Target()
			r, a := funcs(tg)
			if strings.Join(r, ",") != c.replaced || strings.Join(a, ",") != c.added {
				t.Fatalf("replaced %v added %v, want %q %q", r, a, c.replaced, c.added)
			}
			if b.Changed() != (c.replaced != "" || c.added != "") {
				t.Fatalf("Changed() = %v", b.Changed())
			}
			f := &update.File{ID: "t", Kind: "process", Targets: []update.Target{*tg}}
			if _, err := update.Marshal(f); err != nil {
				t.Fatalf("invalid target: %v", err)
			}
		})
	}
}

// References through .LC labels into a string section keep the label's
// offset: new code must point at its own strings, not the section's first.
func TestStringLabelOffsets(t *testing.T) {
	pre := `const char *f(int x){return x > 1 ? "one" : "two";}`
	post := `const char *f(int x){return x > 2 ? "yes" : "no";}`
	b := NewBuilder("prog", "", "")
	if err := b.AddObject("x.o", compile(t, pre, "-O2"), compile(t, post, "-O2")); err != nil {
		t.Fatal(err)
	}
	tg := b.Target()
	var got []string
	for _, s := range tg.Sections {
		if s.Kind != update.KindText {
			continue
		}
		for _, r := range s.Relocs {
			y := tg.Symbols[r.Symbol]
			if y.Kind != update.SymSection || tg.Sections[y.Section].Kind != update.KindRodata {
				continue
			}
			d := tg.Sections[y.Section].Data
			off := int64(y.Offset) + r.Addend
			if update.RelocIsPCRel(r.Type) {
				off += 4
			}
			if off < 0 || off >= int64(len(d)) {
				t.Fatalf("reference outside its section: %+v", r)
			}
			got = append(got, strings.SplitN(string(d[off:]), "\x00", 2)[0])
		}
	}
	sort.Strings(got)
	if strings.Join(got, ",") != "no,yes" {
		t.Fatalf("new code refers to %q, want no,yes", got)
	}
}

// Why each function is in the update: its own code, data it references, a
// changed function inlined into it, a clone, new.
func TestWhy(t *testing.T) {
	pre := `int puts(const char *);
static inline int h(int x){return x*x+1;}
int f(int x){return h(x)*3;}
int g(int x){return h(x+2)-x;}
void s(void){puts("old text");}
int k(int x){return x*7;}`
	post := strings.NewReplacer("x*x+1;", "x*x+5;", "old text", "new text", "x*7", "x*9").Replace(pre) + "\nint n(int x){return x;}"
	b := NewBuilder("prog", "", "")
	if err := b.AddObject("x.o", compile(t, pre, "-O2 -g"), compile(t, post, "-O2 -g")); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range b.Target().Functions {
		var w []string
		for _, r := range f.Why {
			w = append(w, r.String())
		}
		got[f.Name] = strings.Join(w, "; ")
	}
	want := map[string]string{
		"f": "inlines changed h",
		"g": "inlines changed h",
		"s": `references changed data string "new text"`,
		"k": "changed code",
		"n": "new function",
	}
	for n, w := range want {
		if got[n] != w {
			t.Errorf("%s: why %q, want %q (all: %q)", n, got[n], w, got)
		}
	}
	if baseName("foo.constprop.0.isra.0") != "foo" || baseName("bar.part.3") != "bar" || baseName("baz") != "baz" {
		t.Error("baseName")
	}
}

// With the source trees: the function the patch touches has changed
// source; one below it whose code only holds __LINE__ moved lines.
func TestWhyLines(t *testing.T) {
	src := `int log_at(int line);
int f(int x)
{
	return x + 1;
}
int g(int x)
{
	if (x < 0)
		return log_at(__LINE__);
	return x;
}
`
	post := strings.Replace(src, "return x + 1;", "if (x > 100)\n\t\treturn 100;\n\treturn x + 1;", 1)
	pre, postDir := t.TempDir(), t.TempDir()
	objs := map[string][]byte{}
	for dir, text := range map[string]string{pre: src, postDir: post} {
		c := filepath.Join(dir, "x.c")
		os.WriteFile(c, []byte(text), 0o644)
		if out, err := exec.Command("gcc", "-O2", "-g", "-ffunction-sections", "-fdata-sections", "-c", c, "-o", filepath.Join(dir, "x.o")).CombinedOutput(); err != nil {
			t.Fatalf("gcc: %v\n%s", err, out)
		}
		objs[dir], _ = os.ReadFile(filepath.Join(dir, "x.o"))
	}
	b := NewBuilder("prog", "", "")
	b.SetTrees(pre, postDir)
	if err := b.AddObject("x.o", objs[pre], objs[postDir]); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range b.Target().Functions {
		var w []string
		for _, r := range f.Why {
			w = append(w, r.String())
		}
		got[f.Name] = strings.Join(w, "; ")
	}
	if got["f"] != "changed source at x.c:4" || got["g"] != "only __LINE__ numbers moved in x.c" {
		t.Fatalf("why: %q", got)
	}
}

// A diff of the trees' files that fails (diff missing, exit status 2)
// gives no touched lines and is told to the caller, not taken for "no
// line changed".
func TestTouchedLinesDiffFails(t *testing.T) {
	pre, post := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(pre, "x.c"), []byte("int x;\n"), 0o644)
	os.WriteFile(filepath.Join(post, "x.c"), []byte("int x;\nint y;\n"), 0o644)
	b := NewBuilder("prog", "", "")
	b.SetTrees(pre, post)
	if tl := b.touchedLines("x.c"); tl == nil || !slices.Equal(tl.lines, []int{2}) || b.SourceErr() != nil {
		t.Fatalf("touched %+v, err %v: want line 2, no error", tl, b.SourceErr())
	}
	// Exit status 2: the pre "file" is a directory.
	os.Mkdir(filepath.Join(pre, "y.c"), 0o755)
	os.WriteFile(filepath.Join(post, "y.c"), []byte("int y;\n"), 0o644)
	if tl := b.touchedLines("y.c"); tl != nil || b.SourceErr() == nil || !strings.Contains(b.SourceErr().Error(), "exit status 2") {
		t.Errorf("touched %+v, err %v: want none and an exit status 2 error", tl, b.SourceErr())
	}
	// No diff at all.
	t.Setenv("PATH", t.TempDir())
	b = NewBuilder("prog", "", "")
	b.SetTrees(pre, post)
	if tl := b.touchedLines("x.c"); tl != nil || b.SourceErr() == nil {
		t.Errorf("touched %+v, err %v: want none and an error", tl, b.SourceErr())
	}
}
