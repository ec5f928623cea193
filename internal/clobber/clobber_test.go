package clobber

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"livesplice/include"
)

// compile builds C source into an object as create's builds do.
func compile(t *testing.T, src string, flags ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no gcc")
	}
	dir := t.TempDir()
	c, o := filepath.Join(dir, "u.c"), filepath.Join(dir, "u.o")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append(flags, "-c", "-g", "-ffunction-sections", "-fcf-protection=none", "-o", o, c)
	if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	b, err := os.ReadFile(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const units = `
extern int ext(int);
struct big { long a, b, c; };
__attribute__((noinline)) int leaf(int *p) { return ++*p * 2; }
__attribute__((noinline)) int calls_leaf(int *p) { return leaf(p) + 1; }
__attribute__((noinline)) int calls_ext(int x) { return ext(x) + 1; }
__attribute__((noinline)) void store3(long *p, long a, long b) { p[0] = a; p[1] = b; }
__attribute__((noinline)) double half(double x) { return x / 2; }
__attribute__((noinline)) long seven(long a, long b, long c, long d, long e, long f, long g) { return a ^ b ^ c ^ d ^ e ^ f ^ g; }
__attribute__((noinline)) long byval(struct big s) { return s.a + s.c; }
__attribute__((noinline)) int vsum(int n, ...) { return n; }
__attribute__((noinline)) unsigned long divide(unsigned long a, unsigned long b) { return a / b; }
int (*fp)(int);
__attribute__((noinline)) int indirect(int x) { return fp(x); }
`

func TestClobbers(t *testing.T) {
	o, err := Load(compile(t, units, "-O2"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		fn          string
		under, over Set
	}{
		{"leaf", 1 << RAX, 1 << RAX},
		// Through the object's own callee.
		{"calls_leaf", 1 << RAX, 1 << RAX},
		{"calls_ext", CallClobbered, CallClobbered},
		// A tail call through a pointer (jmp *fp): only the
		// over-estimate takes an indirect jump for a call.
		{"indirect", 0, CallClobbered},
		// Writes nothing: rdx (its third argument) is only read, so a
		// caller may keep that value there across the call.
		{"store3", 0, 1<<RSI | 1<<RDX},
		{"half", 1 << X0, 1 << X0},
		// div %rsi reads its operand and writes rax and rdx.
		{"divide", 1<<RAX | 1<<RDX, 1<<RAX | 1<<RDX},
	} {
		u, err := o.Clobbers(c.fn, Under)
		if err != nil {
			t.Fatal(err)
		}
		v, err := o.Clobbers(c.fn, Over)
		if err != nil {
			t.Fatal(err)
		}
		if u != c.under {
			t.Errorf("%s: under %s, want %s", c.fn, u, c.under)
		}
		// The over-estimate may name what an instruction only reads,
		// but holds the under-estimate.
		if v&u != u || v&c.over != c.over {
			t.Errorf("%s: over %s, want at least %s and %s", c.fn, v, c.over, u)
		}
	}
	if !o.Reaches("calls_leaf", "leaf") || o.Reaches("leaf", "calls_leaf") || !o.RefersTo("calls_leaf", "leaf") {
		t.Error("calls_leaf -> leaf not seen, or seen backwards")
	}
	if _, err := o.Clobbers("nosuch", Under); err == nil {
		t.Error("a missing function has clobbers")
	}
}

func TestSignature(t *testing.T) {
	obj, err := Load(compile(t, units, "-O2"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		fn   string
		want Sig
	}{
		{"leaf", Sig{Returns: 1 << RAX}},
		{"store3", Sig{}},
		{"half", Sig{Returns: 1 << X0}},
		{"seven", Sig{Returns: 1 << RAX, Stack: true}},
		{"byval", Sig{Returns: 1 << RAX, Stack: true}},
		{"vsum", Sig{Returns: 1 << RAX, Varargs: true}},
	} {
		got, err := obj.Signature(c.fn)
		if err != nil {
			t.Fatalf("%s: %v", c.fn, err)
		}
		if got != c.want {
			t.Errorf("%s: %+v, want %+v", c.fn, got, c.want)
		}
	}
	if _, err := obj.Signature("nosuch"); err == nil {
		t.Error("a missing function has a signature")
	}
}

// C++: functions are found by their mangled names, members defined outside
// their class through the declaration they complete; "this" is an argument.
func TestSignatureCXX(t *testing.T) {
	if _, err := exec.LookPath("g++"); err != nil {
		t.Skip("no g++")
	}
	obj, err := Load(compile(t, `struct S { long f(long a, long b, long c, long d, long e); long g(long a); long v; };
long S::f(long a, long b, long c, long d, long e) { return v + a + b + c + d + e; }
long S::g(long a) { return v + a; }
__attribute__((noinline)) double h(double x) { return x * 3; }`, "-O2", "-x", "c++"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		fn   string
		want Sig
	}{
		{"_ZN1S1fElllll", Sig{Returns: 1 << RAX}},
		{"_ZN1S1gEl", Sig{Returns: 1 << RAX}},
		{"_Z1hd", Sig{Returns: 1 << X0}},
	} {
		got, err := obj.Signature(c.fn)
		if err != nil {
			t.Fatalf("%s: %v", c.fn, err)
		}
		if got != c.want {
			t.Errorf("%s: %+v, want %+v", c.fn, got, c.want)
		}
	}
}

// On real code (the shadow-variable runtime), every function's
// under-estimate lies within its over-estimate.
func TestUnderWithinOver(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, include.HeaderName), include.Header, 0o644); err != nil {
		t.Fatal(err)
	}
	obj := compile(t, string(include.ShadowRuntime), "-O2", "-I", dir)
	o, err := Load(obj)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.funcs) < 4 {
		t.Fatalf("%d functions", len(o.funcs))
	}
	for name := range o.funcs {
		u, err1 := o.Clobbers(name, Under)
		v, err2 := o.Clobbers(name, Over)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if u&v != u {
			t.Errorf("%s: under %s not within over %s", name, u, v)
		}
	}
}

// Damaged objects are errors, never panics.
func FuzzLoad(f *testing.F) {
	f.Add([]byte{0x7f, 'E', 'L', 'F'})
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := Load(b)
		if err != nil {
			return
		}
		for name := range o.funcs {
			o.Clobbers(name, Under)
			o.Clobbers(name, Over)
			o.Reaches(name, name)
			o.Signature(name)
		}
	})
}

// binutils leaves R_X86_64_NONE entries (symbol 0) in relocation
// sections: one at a call's field must not make that call an outside one
// (all of CallClobbered), which would take the old function for writing
// every register and leave a needed stub out.
func TestNoneRelocationSkipped(t *testing.T) {
	obj := compile(t, `int g;
__attribute__((noinline)) int leaf(int *p) { return ++*p * 2; }
__attribute__((noinline)) int caller(int *p) { return leaf(p) + g; }`, "-O2")
	want, err := Load(obj)
	if err != nil {
		t.Fatal(err)
	}
	w, err := want.Clobbers("caller", Under)
	if err != nil || w == CallClobbered {
		t.Fatalf("caller writes %s (%v) before the change", w, err)
	}
	// caller's relocations become: its call to leaf, then a NONE entry
	// at the same field.
	f, err := elf.NewFile(bytes.NewReader(obj))
	if err != nil {
		t.Fatal(err)
	}
	var rs *elf.Section
	for _, s := range f.Sections {
		if s.Type == elf.SHT_RELA && f.Sections[s.Info].Name == ".text.caller" {
			rs = s
		}
	}
	if rs == nil || rs.Size < 48 {
		t.Fatalf("no two relocations for .text.caller")
	}
	b := slices.Clone(obj)
	rel := b[rs.Offset : rs.Offset+rs.Size]
	call := -1
	for off := 0; off+24 <= len(rel); off += 24 {
		if elf.R_X86_64(binary.LittleEndian.Uint64(rel[off+8:])&0xffffffff) == elf.R_X86_64_PLT32 {
			call = off
		}
	}
	if call < 0 {
		t.Fatal("caller has no PLT32 relocation")
	}
	copy(rel[0:24], slices.Clone(rel[call:call+24]))
	copy(rel[24:32], rel[0:8])                     // same offset
	clear(rel[32:48])                              // info 0: R_X86_64_NONE, symbol 0; addend 0
	for off := 48; off+24 <= len(rel); off += 24 { // any others: NONE at offset 0
		clear(rel[off : off+24])
	}
	o, err := Load(b)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := o.Clobbers("caller", Under); err != nil || got != w {
		t.Errorf("with a NONE relocation caller writes %s (%v), want %s", got, err, w)
	}
}
