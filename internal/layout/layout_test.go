package layout

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// compile builds a C source into an object with debug information, as the
// create step's compiler wrapper does.
func compile(t testing.TB, src string) []byte {
	t.Helper()
	dir := t.TempDir()
	c := filepath.Join(dir, "x.c")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	o := filepath.Join(dir, "x.o")
	if out, err := exec.Command("gcc", "-O2", "-g", "-ffunction-sections", "-fdata-sections", "-c", c, "-o", o).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	data, err := os.ReadFile(o)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

const pre = `
struct conn { int fd; int requests; };
typedef struct { long a; char b; } pair_t;
union val { int i; double d; };
struct other { int x; };
int use(struct conn *c, pair_t *p) { return c->fd + (int)p->a; }
int other(struct other *o) { return o->x; }
union val v;
`

func TestCompareFindsChanges(t *testing.T) {
	for _, tc := range []struct {
		name, post string
		funcs      []string
		want       []string
	}{
		{"unchanged", pre, []string{"use"}, nil},
		{"field added", strings.Replace(pre, "int requests; }", "int requests; int limit; }", 1), []string{"use"},
			[]string{"struct conn: layout changed (size 8 -> 12 bytes; fields: +limit at 8)"}},
		{"field moved", strings.Replace(pre, "int fd; int requests;", "int requests; int fd;", 1), []string{"use"},
			[]string{"struct conn: layout changed (fields: requests: offset 4 -> 0, fd: offset 0 -> 4)"}},
		{"field retyped", strings.Replace(pre, "int requests; }", "unsigned requests; }", 1), []string{"use"},
			[]string{"struct conn: layout changed (fields: requests: int -> unsigned int)"}},
		{"field removed", strings.Replace(pre, "int fd; int requests;", "int fd;", 1), []string{"use"},
			[]string{"struct conn: layout changed (size 8 -> 4 bytes; fields: -requests)"}},
		{"anonymous struct through its typedef", strings.Replace(pre, "char b;", "short b;", 1), []string{"use"},
			[]string{"pair_t: layout changed (fields: b: char -> short int)"}},
		{"union of a file-scope variable", strings.Replace(pre, "double d;", "long double d;", 1), nil,
			[]string{"union val: layout changed (size 8 -> 16 bytes; fields: d: double -> long double)"}},
		// struct other changed, but no changed function (nor variable) uses it.
		{"type of an unchanged function", strings.Replace(pre, "int x; }", "long x; }", 1), []string{"use"}, nil},
		{"same type, function named", strings.Replace(pre, "int x; }", "long x; }", 1), []string{"other"},
			[]string{"struct other: layout changed (size 4 -> 8 bytes; fields: x: int -> long int)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := FromObject(compile(t, pre), nil)
			if err != nil {
				t.Fatal(err)
			}
			after, err := FromObject(compile(t, tc.post), tc.funcs)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range Compare(before, after) {
				got = append(got, c.String())
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// A changed function that sees a type only inside a helper inlined into it
// (the helper's abstract instance follows the function in the DWARF).
func TestInlinedHelper(t *testing.T) {
	const src = `struct hidden { int x; };
static inline int helper(void *p) { struct hidden *h = p; return h->x; }
int use(void *p) { return helper(p) + 1; }
`
	before, err := FromObject(compile(t, src), nil)
	if err != nil {
		t.Fatal(err)
	}
	after, err := FromObject(compile(t, strings.Replace(src, "int x;", "long x;", 1)), []string{"use"})
	if err != nil {
		t.Fatal(err)
	}
	got := Compare(before, after)
	if len(got) != 1 || got[0].String() != "struct hidden: layout changed (size 4 -> 8 bytes; fields: x: int -> long int)" {
		t.Fatalf("got %v", got)
	}
}

func TestNoDebugInfo(t *testing.T) {
	dir := t.TempDir()
	c := filepath.Join(dir, "x.c")
	os.WriteFile(c, []byte("struct s { int a; }; int f(struct s *p) { return p->a; }\n"), 0o644)
	o := filepath.Join(dir, "x.o")
	if out, err := exec.Command("gcc", "-O2", "-c", c, "-o", o).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	data, _ := os.ReadFile(o)
	types, err := FromObject(data, []string{"f"})
	if err != nil || len(types) != 0 {
		t.Fatalf("object without DWARF: %v, %v", types, err)
	}
	if _, err := FromObject([]byte("not an object"), nil); err == nil {
		t.Fatal("garbage read as an object")
	}
}

func TestNormalize(t *testing.T) {
	if got := Normalize("  struct \t conn "); got != "struct conn" {
		t.Fatalf("got %q", got)
	}
}

// FuzzLayout: no object, however damaged its DWARF, makes the reader or
// the comparison panic.
func FuzzLayout(f *testing.F) {
	seed := compile(f, pre)
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := FromObject(data, nil)
		if err != nil {
			return
		}
		b, err := FromObject(data, []string{"use", "other"})
		if err != nil {
			return
		}
		for _, c := range Compare(a, b) {
			_ = c.String()
		}
	})
}
