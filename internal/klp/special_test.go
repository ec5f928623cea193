package klp

import (
	"bytes"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// compileSrc compiles a C source as kbuild would (-ffunction-sections
// -fdata-sections).
func compileSrc(t *testing.T, src string) []byte {
	t.Helper()
	dir := t.TempDir()
	c := filepath.Join(dir, "unit.c")
	os.WriteFile(c, []byte(src), 0o644)
	o := filepath.Join(dir, "unit.o")
	if out, err := exec.Command("gcc", "-O2", "-c", "-fno-pic", "-mno-red-zone", "-ffunction-sections", "-fdata-sections", "-fmacro-prefix-map="+dir+"/=", "-o", o, c).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	b, err := os.ReadFile(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// replaced lists the replaced functions of a build.
func replaced(r *Result) []string {
	var out []string
	for _, tg := range r.Targets {
		for _, f := range tg.Functions {
			out = append(out, f.Name)
		}
	}
	return out
}

// relocTargets names what a module section's relocations point at.
func relocTargets(t *testing.T, o *elf.File, sec string) map[string]bool {
	t.Helper()
	syms, _ := o.Symbols()
	out := map[string]bool{}
	for _, s := range o.Sections {
		if s.Type != elf.SHT_RELA || int(s.Info) >= len(o.Sections) || o.Sections[s.Info].Name != sec {
			continue
		}
		d, _ := s.Data()
		for i := 0; i+24 <= len(d); i += 24 {
			y := syms[int(le64(d[i+8:])>>32)-1]
			name := y.Name
			if elf.ST_TYPE(y.Info) == elf.STT_SECTION {
				name = o.Sections[y.Section].Name
			}
			out[name] = true
		}
	}
	return out
}

func le64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// cpuHas is static_cpu_has as the kernel compiles it: a jmp into a stub
// in .altinstr_aux that tests the feature bit and jumps back.
const cpuHas = `
extern int printk(const char *fmt, ...);
extern unsigned char boot_cpu_data[];
static inline __attribute__((always_inline)) int has(void)
{
	asm goto("jmp 6f\n .pushsection .altinstr_aux,\"ax\"\n6: testb $1, boot_cpu_data+3(%%rip)\n jnz %l[yes]\n jmp %l[no]\n .popsection" : : : : yes, no);
yes:
	return 1;
no:
	return 0;
}
int other(int v) { return has() ? v : -v; }
int show(int v) { EXTRA return has() + v; }
`

// TestBuildCarriesAltinstrAux: a changed function that jumps into
// .altinstr_aux gets the module's copy of the unit's stubs (relocated to
// the new code and boot_cpu_data; the stub of the unchanged function is
// dead code, left unrelocated), and the unchanged function stays unchanged.
func TestBuildCarriesAltinstrAux(t *testing.T) {
	pre := compileSrc(t, strings.Replace(cpuHas, "EXTRA", "", 1))
	post := compileSrc(t, strings.Replace(cpuHas, "EXTRA", `printk("x");`, 1))
	r, err := Build([]Unit{{Rel: "fs/unit.o", Object: "vmlinux", Pre: pre, Post: post}}, map[string]bool{"printk": true, "boot_cpu_data": true})
	if err != nil {
		t.Fatal(err)
	}
	if got := replaced(r); len(got) != 1 || got[0] != "show" {
		t.Fatalf("replaced %v, want [show]", got)
	}
	o, err := elf.NewFile(bytes.NewReader(r.Object))
	if err != nil {
		t.Fatal(err)
	}
	if o.Section(auxSection) == nil {
		t.Fatal("no .altinstr_aux in the module")
	}
	got := relocTargets(t, o, auxSection)
	if !got[".text.show"] || !got["boot_cpu_data"] || len(got) != 2 {
		t.Errorf(".altinstr_aux relocations point at %v, want .text.show and boot_cpu_data", got)
	}
	if got := relocTargets(t, o, ".text.show"); !got[auxSection] {
		t.Errorf("the new show does not jump into the module's .altinstr_aux: %v", got)
	}
}

// ddebug is pr_debug's descriptor (struct _ddebug: modname, function,
// filename, format, line) in __dyndbg, named by __COUNTER__.
const ddebug = `
extern int printk(const char *fmt, ...);
struct dd { const char *modname, *function, *filename, *format; unsigned int lineno; int key[4]; } __attribute__((aligned(8)));
extern void dd_print(struct dd *d);
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define DBG(fmt) DBG1(fmt, CAT(__UNIQUE_ID_ddebug, __COUNTER__))
#define DBG1(fmt, id) do { static struct dd __attribute__((used, section("__dyndbg"), aligned(8))) id = \
	{ "unit", __func__, "unit.c", fmt, __LINE__ }; dd_print(&id); } while (0)
TOP
int other(int v) { DBG("other %d\n"); return v + 1; }
int show(int v) { DBG("show %d\n"); EXTRA return v * 3; }
`

// TestBuildDyndbg: pr_debug descriptors are no data change; a changed
// function's descriptors go into the module's __dyndbg; an unchanged
// function whose descriptor moved (line, __COUNTER__ name) stays unchanged.
func TestBuildDyndbg(t *testing.T) {
	src := ddebug
	pre := compileSrc(t, strings.NewReplacer("TOP", "", "EXTRA", "").Replace(src))
	post := compileSrc(t, strings.NewReplacer("TOP", "static int top(void) { DBG(\"top\\n\"); return 0; }\n\n\n", "EXTRA", `DBG("new %d\n"); printk("x");`).Replace(src))
	r, err := Build([]Unit{{Rel: "fs/unit.o", Object: "vmlinux", Pre: pre, Post: post}}, map[string]bool{"printk": true, "dd_print": true})
	if err != nil {
		t.Fatal(err)
	}
	if got := replaced(r); len(got) != 1 || got[0] != "show" {
		t.Fatalf("replaced %v, want [show]", got)
	}
	o, err := elf.NewFile(bytes.NewReader(r.Object))
	if err != nil {
		t.Fatal(err)
	}
	if s := o.Section(dyndbgSection); s == nil || s.Flags&elf.SHF_ALLOC == 0 {
		t.Fatalf("no __dyndbg in the module: %v", s)
	}
	if got := relocTargets(t, o, ".text.show"); !got[dyndbgSection] {
		t.Errorf("the new show does not refer to the module's descriptors: %v", got)
	}
	// No new descriptor: every descriptor of the section has a pre twin
	// and a moved line.
	post1 := compileSrc(t, strings.NewReplacer("TOP", "\n\n", "EXTRA", `printk("x");`).Replace(src))
	r1, err := Build([]Unit{{Rel: "fs/unit.o", Object: "vmlinux", Pre: pre, Post: post1}}, map[string]bool{"printk": true, "dd_print": true})
	if err != nil {
		t.Fatalf("lines moved: %v", err)
	}
	if got := replaced(r1); len(got) != 1 || got[0] != "show" {
		t.Fatalf("lines moved: replaced %v, want [show]", got)
	}
	// The same patch with the existing descriptor's message changed and
	// nothing else: show changes (its descriptor is another one).
	post2 := compileSrc(t, strings.NewReplacer("TOP", "", "EXTRA", "", `DBG("show %d\n")`, `DBG("show: %d\n")`).Replace(src))
	r2, err := Build([]Unit{{Rel: "fs/unit.o", Object: "vmlinux", Pre: pre, Post: post2}}, map[string]bool{"printk": true, "dd_print": true})
	if err != nil {
		t.Fatalf("message change: %v", err)
	}
	if got := replaced(r2); len(got) != 1 || got[0] != "show" {
		t.Fatalf("message change: replaced %v, want [show]", got)
	}
}

// where is a message naming its place, as fortify's warnings do.
const where = `
extern int printk(const char *fmt, ...);
#define STR2(x) #x
#define STR(x) STR2(x)
TOP
int show(int v) { if (v > 4) printk("field at " __FILE__ ":" STR(__LINE__) MSG); return v * 3; }
`

// TestBuildLineOnly: a function whose only difference is the line number
// in a "file.c:LINE" message is no change (kpatch's warn-detect-FAIL); the
// same with another change in the message is one.
func TestBuildLineOnly(t *testing.T) {
	pre := compileSrc(t, strings.NewReplacer("TOP", "", "MSG", `"\n"`).Replace(where))
	post := compileSrc(t, strings.NewReplacer("TOP", "\n\n", "MSG", `"\n"`).Replace(where))
	if _, err := Build([]Unit{{Rel: "fs/unit.o", Object: "vmlinux", Pre: pre, Post: post}}, map[string]bool{"printk": true}); !errors.Is(err, ErrNoChange) {
		t.Fatalf("lines moved: %v, want no change", err)
	}
	post2 := compileSrc(t, strings.NewReplacer("TOP", "\n\n", "MSG", `"!\n"`).Replace(where))
	r, err := Build([]Unit{{Rel: "fs/unit.o", Object: "vmlinux", Pre: pre, Post: post2}}, map[string]bool{"printk": true})
	if err != nil {
		t.Fatal(err)
	}
	if got := replaced(r); len(got) != 1 || got[0] != "show" {
		t.Fatalf("message changed: replaced %v, want [show]", got)
	}
}
