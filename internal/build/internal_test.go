package build

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args    string
		mode    int
		output  string
		sources []string
		objects []string
	}{
		{"--version", modePass, "", nil, nil},
		{"-E x.c", modePass, "", []string{"x.c"}, nil},
		{"-M x.c", modePass, "", []string{"x.c"}, nil},
		{"-MM -MF x.d x.c", modePass, "", []string{"x.c"}, nil},
		{"-S x.c", modePass, "", []string{"x.c"}, nil},
		{"-fsyntax-only x.c", modePass, "", []string{"x.c"}, nil},
		{"-c -MD -MF x.d -I inc -o out/x.o x.c", modeCompile, "out/x.o", []string{"x.c"}, nil},
		{"-c -ox.o -include cfg.h x.S", modeCompile, "x.o", []string{"x.S"}, nil},
		{"-c -x c weird.src", modeCompile, "", []string{"weird.src"}, nil},
		{"-o prog a.o b.o -L lib -l m", modeLink, "prog", nil, []string{"a.o", "b.o"}},
		{"-O2 -o prog main.c util.cpp x.o", modeLink, "prog", []string{"main.c", "util.cpp"}, []string{"x.o"}},
		{"-shared -Wl,-soname,libx.so.1 -o libx.so.1 x.o", modeLink, "libx.so.1", nil, []string{"x.o"}},
		{"-Xlinker -Map -Xlinker out.map x.o", modeLink, "", nil, []string{"x.o"}},
	} {
		inv := parseArgs(strings.Fields(tc.args))
		if inv.mode != tc.mode || inv.output != tc.output ||
			!reflect.DeepEqual(inv.sources, tc.sources) || !reflect.DeepEqual(inv.objects, tc.objects) {
			t.Errorf("%q: mode %d output %q sources %q objects %q; want %d %q %q %q",
				tc.args, inv.mode, inv.output, inv.sources, inv.objects, tc.mode, tc.output, tc.sources, tc.objects)
		}
	}
}

func TestWrappedArgs(t *testing.T) {
	flags := []string{"-ffunction-sections", "-fdata-sections", "-g", "-ffile-prefix-map=/w/pre=/src"}
	for _, tc := range []struct{ args, want string }{
		{"-E x.c", "-E x.c"},
		{"-c x.c", "-c x.c " + strings.Join(flags, " ")},
		{"-o prog x.o", "-o prog x.o"},
		{"-pipe -o prog a.c b.c", "-o prog a.c b.c -save-temps=obj " + strings.Join(flags, " ")},
		// Same stem twice: gcc would keep both as prog-a.o and break the link.
		{"-o prog a.c sub/a.c", "-o prog a.c sub/a.c"},
	} {
		got := strings.Join(parseArgs(strings.Fields(tc.args)).wrappedArgs("/w/pre", "/src"), " ")
		if got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestDumpPrefix(t *testing.T) {
	for args, want := range map[string]string{
		"a.c b.c":                  "a-",
		"-o d/prog a.c":            "d/prog-",
		"-o lib/libx.so.1 a.c":     "lib/libx.so.1-",
		"-dumpdir tmp/x- -o p a.c": "tmp/x-",
	} {
		if got := parseArgs(strings.Fields(args)).dumpPrefix(); got != want {
			t.Errorf("%q: %q, want %q", args, got, want)
		}
	}
}

func TestRecordsAndLibrarySearch(t *testing.T) {
	tree := t.TempDir()
	for _, f := range []string{"lib/libs.a", "lib/libd.so", "lib/libd.a", "other/libd.a", "main.o"} {
		p := filepath.Join(tree, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	inv := parseArgs(strings.Fields("-o prog main.o -Llib -Lother -ls -ld -lc -l:libs.a"))
	recs := inv.records(tree, tree, inv.args)
	if len(recs) != 1 {
		t.Fatalf("records %+v", recs)
	}
	r := recs[0]
	// libd.so comes first in lib/, so -ld is not an archive; libc is outside.
	want := []string{tree + "/lib/libs.a", tree + "/lib/libs.a"}
	if r.Kind != "link" || r.Output != tree+"/prog" || !reflect.DeepEqual(r.Archives, want) ||
		!reflect.DeepEqual(r.Objects, []string{tree + "/main.o"}) {
		t.Errorf("record %+v", r)
	}
	inv = parseArgs(strings.Fields("-static -o prog main.o -Llib -ld"))
	if got := inv.records(tree, tree, inv.args)[0].Archives; !reflect.DeepEqual(got, []string{tree + "/lib/libd.a"}) {
		t.Errorf("-static archives %v", got)
	}

	inv = parseArgs(strings.Fields("-c a.c sub/b.c"))
	recs = inv.records("/w", "/w", inv.args)
	if len(recs) != 2 || recs[0].Output != "/w/a.o" || recs[1].Output != "/w/b.o" || recs[1].Sources[0] != "/w/sub/b.c" {
		t.Errorf("compile records %+v", recs)
	}
}

func TestParseArchiveGNU(t *testing.T) {
	dir := t.TempDir()
	names := []string{"short.o", "a_member_name_longer_than_sixteen.o", "odd"}
	for i, n := range names {
		// Odd sizes exercise the 2-byte padding.
		if err := os.WriteFile(filepath.Join(dir, n), []byte(strings.Repeat("x", i+1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, thin := range []bool{false, true} {
		flags := "rcs"
		if thin {
			flags = "rcsT"
		}
		name := fmt.Sprintf("lib%v.a", thin)
		cmd := exec.Command("ar", append([]string{flags, name}, names...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ar: %v\n%s", err, out)
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		members, gotThin, err := parseArchive(b)
		if err != nil {
			t.Fatal(err)
		}
		if gotThin != thin || len(members) != len(names) {
			t.Fatalf("thin=%v: %v %+v", thin, gotThin, members)
		}
		for i, m := range members {
			wantData := []byte(strings.Repeat("x", i+1))
			if thin {
				wantData = nil
			}
			if m.Name != names[i] || !slices.Equal(m.Data, wantData) {
				t.Errorf("thin=%v member %d: %q %q", thin, i, m.Name, m.Data)
			}
		}
	}
}

func TestParseArchiveBSD(t *testing.T) {
	hdr := func(name string, size int) string {
		return fmt.Sprintf("%-16s%-12s%-6s%-6s%-8s%-10d`\n", name, "0", "0", "0", "644", size)
	}
	long := "a_very_long_bsd_member_name.o"
	var b strings.Builder
	b.WriteString("!<arch>\n")
	b.WriteString(hdr("__.SYMDEF", 4) + "SYMS")
	b.WriteString(hdr(fmt.Sprintf("#1/%d", len(long)), len(long)+2) + long + "ab" + "\n") // odd size: padded
	b.WriteString(hdr("s.o", 2) + "hi")
	members, thin, err := parseArchive([]byte(b.String()))
	if err != nil || thin {
		t.Fatal(err, thin)
	}
	want := []arMember{{long, []byte("ab")}, {"s.o", []byte("hi")}}
	if !reflect.DeepEqual(members, want) {
		t.Errorf("members %+v, want %+v", members, want)
	}
	if _, _, err := parseArchive([]byte("!<arch>\n" + hdr("x", 10) + "short")); err == nil {
		t.Error("truncated archive accepted")
	}
}

func TestIsBuildProduct(t *testing.T) {
	for head, want := range map[string]bool{
		"\x7fELF\x02\x01\x01\x00": true,
		"!<arch>\n":               true,
		"!<thin>\n":               true,
		"#!/bin/sh":               false,
		"\x7fEL":                  false,
		"":                        false,
	} {
		if got := isBuildProduct([]byte(head)); got != want {
			t.Errorf("%q: %v", head, got)
		}
	}
}

func TestUnitArgs(t *testing.T) {
	for _, tc := range []struct{ args, source, want string }{
		{"-O2 -MD -MF x.d -MT x.o -MQ y -MP -c -o out/x.o x.c", "/w/x.c", "-O2 -c x.c"},
		{"-O2 -Wp,-MD,.deps/x.Po -MFx.d -c -ox.o -I inc -include cfg.h x.c", "/w/x.c", "-O2 -c -I inc -include cfg.h x.c"},
		// One source of several; the others, objects and the link's own
		// options go.
		{"-O2 -g -o prog a.c sub/b.c x.o libz.a -L lib -lm -lfoo -Wl,-z,now -Xlinker -Map -Xlinker m -shared -rdynamic", "/w/sub/b.c", "-O2 -g sub/b.c"},
		{"-c -x c weird.src other.src", "/w/weird.src", "-c -x c weird.src"},
	} {
		got := strings.Join(unitArgs(strings.Fields(tc.args), "/w", tc.source), " ")
		if got != tc.want {
			t.Errorf("%q for %s: %q, want %q", tc.args, tc.source, got, tc.want)
		}
	}
}

func TestReroot(t *testing.T) {
	for s, want := range map[string]string{
		"/w/pre":                     "/w/post",
		"/w/pre/a.c":                 "/w/post/a.c",
		"-I/w/pre/inc":               "-I/w/post/inc",
		"-ffile-prefix-map=/w/pre=.": "-ffile-prefix-map=/w/post=.",
		"-DX=\"/w/pre:/w/pre/b\"":    "-DX=\"/w/post:/w/post/b\"",
		"/w/prefix/a.c":              "/w/prefix/a.c",
		"/w/pre.d":                   "/w/pre.d",
		"-O2":                        "-O2",
	} {
		if got := reroot(s, "/w/pre", "/w/post"); got != want {
			t.Errorf("%q: %q, want %q", s, got, want)
		}
	}
}

func TestParseDeps(t *testing.T) {
	in := "x.o: x.c /usr/include/stdio.h \\\n  inc/a\\ b.h dir/c$$.h \\\n sub/d.h\n"
	want := []string{"x.c", "/usr/include/stdio.h", "inc/a b.h", "dir/c$.h", "sub/d.h"}
	if got := parseDeps(in); !reflect.DeepEqual(got, want) {
		t.Errorf("%q", got)
	}
	if got := parseDeps(""); len(got) != 0 {
		t.Errorf("empty: %q", got)
	}
}

// A source compiled and linked in one step together with another of the
// same name has no object of its own: Recompile refuses it by name.
func TestRecompileSameStemRefused(t *testing.T) {
	dir := t.TempDir()
	for f, s := range map[string]string{
		"a.c":     "int a(void) { return 1; }\n",
		"sub/a.c": "int main(void) { return 0; }\n",
	} {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, f), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	patch := filepath.Join(t.TempDir(), "a.patch")
	os.WriteFile(patch, []byte("--- a/a.c\n+++ b/a.c\n@@ -1 +1 @@\n-int a(void) { return 1; }\n+int a(void) { return 2; }\n"), 0o644)
	rec := record{Cwd: dir, Args: []string{"-o", "prog", "a.c", "sub/a.c"}, Kind: "link", Output: filepath.Join(dir, "prog"),
		Sources: []string{filepath.Join(dir, "a.c"), filepath.Join(dir, "sub/a.c")}}
	us := inlineUnits(&Tree{Root: dir}, rec, "prog", nil)
	if len(us) != 2 || us[0].obj != "" || us[1].obj != "" {
		t.Fatalf("units %+v", us)
	}
	tr := &Tree{Root: dir, Outputs: []Output{{Rel: "prog"}}, units: us, plain: &plainInfo{src: dir, cc: "gcc", ran: true}}
	post := filepath.Join(filepath.Dir(dir), "post")
	defer os.RemoveAll(post)
	_, err := Recompile(context.Background(), tr, RecompileOptions{Patch: patch})
	if err == nil || !strings.Contains(err.Error(), "recompile a.c") || !strings.Contains(err.Error(), "another source of the same name") {
		t.Fatalf("err = %v", err)
	}
}

// LastLines keeps the last n lines, trailing blank lines and spaces dropped.
func TestLastLines(t *testing.T) {
	for _, c := range []struct {
		s    string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc"},
		{"a\nb\n\n  \n", 1, "b"},
		{"  a\n", 3, "  a"},
		{"", 2, ""},
	} {
		if got := LastLines(c.s, c.n); got != c.want {
			t.Errorf("LastLines(%q, %d) = %q, want %q", c.s, c.n, got, c.want)
		}
	}
}
