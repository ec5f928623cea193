package deb

import (
	"debug/elf"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"livesplice/internal/update"
)

// The library of the matching tests: hidden functions across units,
// statics, static data reached by code, a table of static function
// pointers, and a static that nothing exported reaches.
var matchSrc = map[string]string{
	"a.c": `
#include <stdio.h>
__attribute__((visibility("hidden"))) int helper(int x);
static int counter;
static int table_a[4] = {1, 2, 3, 4};
static __attribute__((noinline)) int twice(int x) { return 2 * x + table_a[x & 3]; }
static __attribute__((noinline)) int thrice(int x) { return 3 * x; }
static int (*const ops[])(int) = {twice, thrice};
static __attribute__((noinline)) int orphan(int x) { return x ^ 0x55; }
int (*orphan_ptr)(int);
__attribute__((visibility("default"))) int lib_entry(int x) { counter++; printf("%d\n", x); return ops[x & 1](x) + helper(x) + counter; }
`,
	"b.c": `
__attribute__((visibility("hidden"))) int helper(int x) { return x * 7; }
__attribute__((visibility("hidden"))) int level = 3;
__attribute__((visibility("default"))) int lib_other(int x) { return helper(x) + level; }
`,
}

// linkTwice builds the objects of matchSrc (with CFLAGS) and links them
// twice: the plain build's file, and a "shipped" one whose sections lie
// elsewhere (more exported names and another hash style move .dynstr and
// everything after it), as an older binutils would, with shipFlags (-z
// noseparate-code: read-only data in the code's segment, as before
// binutils 2.31); the shipped one is
// stripped, its unstripped link kept as the truth.
func linkTwice(t *testing.T, dir string, cflags, shipFlags string, src map[string]string) (objs []string, shipped, truth string) {
	t.Helper()
	for name, code := range src {
		write(t, filepath.Join(dir, name), code)
		o := strings.TrimSuffix(name, ".c") + ".o"
		sh(t, dir, "gcc "+cflags+" -fPIC -c -o "+o+" "+name)
		objs = append(objs, filepath.Join(dir, o))
	}
	slices.Sort(objs)
	write(t, filepath.Join(dir, "extra.c"), "int extra_export_one(void){return 1;}\nint extra_export_two(void){return 2;}\n")
	sh(t, dir, "gcc -fPIC -c -o extra.o extra.c")
	sh(t, dir, "gcc -shared -Wl,--build-id -o libm.so a.o b.o")
	sh(t, dir, "gcc -shared -Wl,--build-id -Wl,--hash-style=both "+shipFlags+" -o truth.so extra.o a.o b.o")
	sh(t, dir, "mkdir -p shipped && strip --strip-all -o shipped/libm.so truth.so")
	return objs, filepath.Join(dir, "shipped", "libm.so"), filepath.Join(dir, "truth.so")
}

// symbolsOf reads the truth: name (file-qualified for statics) -> address.
func symbolsOf(t *testing.T, path string) map[string]uint64 {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	file := ""
	for _, y := range syms {
		if elf.ST_TYPE(y.Info) == elf.STT_FILE {
			file = y.Name
			continue
		}
		if elf.ST_BIND(y.Info) == elf.STB_LOCAL {
			out[file+":"+y.Name] = y.Value
		} else {
			out[y.Name] = y.Value
		}
	}
	return out
}

func TestMatchRecover(t *testing.T) {
	for _, v := range []struct{ cflags, ship string }{
		{"-O2", ""}, {"-O0", ""}, {"-O2 -fvisibility=hidden", ""}, {"-O2", "-Wl,-z,noseparate-code"},
	} {
		t.Run(v.cflags+v.ship, func(t *testing.T) {
			dir := t.TempDir()
			objs, shipped, truthFile := linkTwice(t, dir, v.cflags, v.ship, matchSrc)
			if r := recoverOne(shipped, []string{filepath.Join(dir, "libm.so")}); r.Symtab != nil {
				t.Fatalf("the test's rebuild is identical to the shipped file: it tests nothing")
			}
			st, unproven, err := matchRecover(shipped, objs)
			if err != nil {
				t.Fatal(err)
			}
			truth := symbolsOf(t, truthFile)
			got := map[string]update.SymtabSym{}
			for _, y := range st.Symbols {
				key := y.Name
				if !y.Global {
					key = y.File + ":" + y.Name
				}
				want, ok := truth[key]
				if !ok {
					want, ok = truth[":"+y.Name] // a hidden global: ld's own scope
				}
				if !ok || want != y.Addr {
					t.Errorf("%s recovered at %#x, the unstripped file has it at %#x (%v)", key, y.Addr, want, ok)
				}
				got[key] = y
			}
			for _, k := range []string{"a.c:twice", "a.c:thrice", "a.c:counter", "a.c:table_a", "a.c:ops", ":helper", ":level", "lib_entry", "lib_other"} {
				if _, ok := got[k]; !ok {
					t.Errorf("%s not recovered (unproven: %v)", k, unproven)
				}
			}
			// orphan (kept at -O0) is in a.o's .text with the rest: placed
			// with it, and proved by it.
			if _, kept := truth["a.c:orphan"]; kept && got["a.c:orphan"].Name == "" {
				t.Errorf("a.c:orphan not recovered with its section")
			}
		})
	}
}

// Code that differs from the shipped file's is not placed, and its symbols
// are named as unproven, never guessed.
func TestMatchRecoverDiffers(t *testing.T) {
	dir := t.TempDir()
	objs, shipped, truthFile := linkTwice(t, dir, "-O2", "", matchSrc)
	// The plain build's b.o differs from the one linked into the shipped file.
	write(t, filepath.Join(dir, "b.c"), strings.Replace(matchSrc["b.c"], "x * 7", "x * 9", 1))
	sh(t, dir, "gcc -O2 -fPIC -c -o b.o b.c")
	st, unproven, err := matchRecover(shipped, objs)
	if err != nil {
		t.Fatal(err)
	}
	truth := symbolsOf(t, truthFile)
	for _, y := range st.Symbols {
		if y.Name == "helper" || y.Name == "lib_other" {
			t.Errorf("%s recovered from code that differs: %+v", y.Name, y)
		}
		if y.File == "a.c" && truth["a.c:"+y.Name] != y.Addr {
			t.Errorf("%s at %#x, truth %#x", y.Name, y.Addr, truth["a.c:"+y.Name])
		}
	}
	if !slices.Contains(unproven, "helper") || !slices.Contains(unproven, "lib_other") {
		t.Errorf("unproven %v lacks helper and lib_other", unproven)
	}
	// Check names what an update needs and did not get.
	r := Recovered{Symtab: st, Method: "matching"}
	tgt := &update.Target{
		Symbols:   []update.Symbol{{Kind: update.SymGlobal, Name: "helper", Type: "func"}, {Kind: update.SymLocal, Name: "twice", File: "a.c", Type: "func"}},
		Functions: []update.Function{{Name: "helper", Status: update.StatusReplaced, Symbol: 0}, {Name: "twice", Status: update.StatusReplaced, Symbol: 1}},
	}
	err = r.Check(shipped, tgt, func(string) bool { return false })
	if err == nil || !strings.Contains(err.Error(), "lack helper") || strings.Contains(err.Error(), "twice") {
		t.Fatalf("Check: %v", err)
	}
}
