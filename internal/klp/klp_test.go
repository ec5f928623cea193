package klp

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"livesplice/internal/objdiff"
	"livesplice/internal/update"
)

// kernelish is a translation unit shaped like kernel code: a function
// calling an exported function, a static callee, a non-exported global and
// static data, with an exception table entry for its code.
const kernelish = `
extern int printk(const char *fmt, ...);
extern int hidden_counter;
static int table[4] = {1, 2, 3, TABLE3};
int counter COUNTER; /* a global: the differ sees .data.counter as new */
static __attribute__((noinline)) int helper(int x) { return x * 3 + hidden_counter; }
int show(int v)
{
	asm volatile("1: nop\n"
		".pushsection __ex_table,\"a\"\n .balign 4\n .long 1b - .\n .long 1b - .\n .long 0\n .popsection\n"
		ALT);
	EXTRA
	return helper(v) + table[v & 3] + hidden_counter;
}
void set(int i, int v) { table[i & 3] = v; counter++; }
CALLBACK
`

// callback is what kpatch-macros.h's KLP_PRE_PATCH_CALLBACK leaves.
const callback = `CALLBACK=struct klp_object; static int my_pre(struct klp_object *o) { return o != 0; } static int (*my_pre_ptr)(struct klp_object *) __attribute__((used, section(".livesplice.klp.pre_patch"))) = my_pre;`

const altEntry = `".pushsection .altinstructions,\"a\"\n .long 1b - .\n .long 2f - .\n .word 0\n .byte 1\n .byte 5\n .popsection\n" ".pushsection .altinstr_replacement,\"ax\"\n2: call printk\n .popsection\n"`

const paraEntry = `".pushsection .parainstructions,\"a\"\n .balign 8\n .quad 1b\n .byte 1\n .byte 1\n .short 0\n .long 0\n .popsection\n"`

// compile builds kernelish with the given macros, as kbuild would with
// -ffunction-sections -fdata-sections.
func compile(t testing.TB, defs ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "unit.c")
	if err := os.WriteFile(src, []byte(kernelish), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-O2", "-c", "-fno-pic", "-mno-red-zone", "-ffunction-sections", "-fdata-sections", "-o", filepath.Join(dir, "unit.o")}
	for _, d := range defs {
		args = append(args, "-D"+d)
	}
	out, err := exec.Command("gcc", append(args, src)...).CombinedOutput()
	if err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "unit.o"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var base = []string{"TABLE3=4", "ALT=", "EXTRA=", "CALLBACK=", "COUNTER="}

func with(over ...string) []string {
	m := map[string]string{}
	var keys []string
	for _, d := range append(append([]string{}, base...), over...) {
		k, v, _ := strings.Cut(d, "=")
		if _, ok := m[k]; !ok {
			keys = append(keys, k)
		}
		m[k] = v
	}
	var out []string
	for _, k := range keys {
		out = append(out, k+"="+m[k])
	}
	return out
}

func TestBuildChangedFunction(t *testing.T) {
	pre := compile(t, base...)
	post := compile(t, with(`EXTRA=printk("show %d\n", v);`)...)
	r, err := Build([]Unit{{Rel: "fs/unit.o", Object: "vmlinux", Pre: pre, Post: post}}, map[string]bool{"printk": true})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Targets) != 1 || r.Targets[0].Path != "vmlinux" {
		t.Fatalf("targets %+v", r.Targets)
	}
	fns := r.Targets[0].Functions
	if len(fns) != 1 || fns[0].Name != "show" || fns[0].Status != update.StatusReplaced || fns[0].Section != -1 || fns[0].Pre == nil || len(fns[0].Pre.Data) == 0 {
		t.Fatalf("functions %+v", fns)
	}
	f := &update.File{ID: "t", Kind: update.KindKernel, Kernel: &update.Kernel{Release: "6.1.0", ModuleName: "livesplice_t", Module: []byte{1}}, Targets: r.Targets}
	if _, err := update.Marshal(f); err != nil {
		t.Fatalf("kernel update does not validate: %v", err)
	}
	if !bytes.Contains(r.Stub, []byte(`.old_name = "show"`)) || !bytes.Contains(r.Stub, []byte(`MODULE_INFO(livepatch, "Y")`)) {
		t.Fatalf("stub:\n%s", r.Stub)
	}

	o, err := elf.NewFile(bytes.NewReader(r.Object))
	if err != nil {
		t.Fatalf("module object: %v", err)
	}
	syms, err := o.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	undef := map[string]bool{}
	alias := false
	for _, y := range syms {
		if y.Section == elf.SHN_UNDEF {
			undef[y.Name] = true
		}
		if y.Name == "__livesplice_new_0" && elf.ST_BIND(y.Info) == elf.STB_GLOBAL && o.Sections[y.Section].Name == ".text.show" {
			alias = true
		}
	}
	if !alias {
		t.Error("no global alias of the new show in .text.show")
	}
	if !undef["printk"] || undef[KLPSymbol("vmlinux", "printk")] {
		t.Errorf("exported printk must stay an ordinary undefined symbol: %v", undef)
	}
	if !undef[KLPSymbol("vmlinux", "hidden_counter")] || !undef[KLPSymbol("vmlinux", "table")] {
		t.Errorf("non-exported and static symbols must be livepatch symbols: %v", undef)
	}
	hasHelper := false
	for n := range undef {
		if strings.HasPrefix(n, ".klp.sym.vmlinux.helper") {
			hasHelper = true
		}
	}
	if !hasHelper {
		t.Errorf("the static callee must be a livepatch symbol: %v", undef)
	}
	ex := o.Section("__ex_table")
	if ex == nil || ex.Size != 12 {
		t.Fatalf("exception table entry of show not copied: %v", ex)
	}

	ko, err := FixModule(r.Object)
	if err != nil {
		t.Fatal(err)
	}
	checkKLP(t, ko, ".text.show")
}

// checkKLP verifies the livepatch relocation format of a fixed module.
func checkKLP(t *testing.T, ko []byte, text string) {
	t.Helper()
	k, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		t.Fatalf("fixed module: %v", err)
	}
	ksyms, err := k.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	for _, y := range ksyms {
		if strings.HasPrefix(y.Name, ".klp.sym.") != (y.Section == shnLivepatch) {
			t.Errorf("symbol %s: section index %#x", y.Name, uint16(y.Section))
		}
	}
	found := false
	for _, s := range k.Sections {
		isKLP := strings.HasPrefix(s.Name, ".klp.rela.")
		if s.Type != elf.SHT_RELA {
			continue
		}
		d, err := s.Data()
		if err != nil {
			t.Fatal(err)
		}
		for o := 0; o+24 <= len(d); o += 24 {
			si := int(binary.LittleEndian.Uint64(d[o+8:]) >> 32)
			if si == 0 || si > len(ksyms) {
				t.Fatalf("%s: symbol index %d", s.Name, si)
			}
			if strings.HasPrefix(ksyms[si-1].Name, ".klp.sym.") != isKLP {
				t.Errorf("%s refers to %s", s.Name, ksyms[si-1].Name)
			}
		}
		if !isKLP {
			continue
		}
		if s.Flags&shfRelaLivepatch == 0 || s.Flags&elf.SHF_ALLOC == 0 || k.Sections[s.Info].Name != text && !strings.HasPrefix(s.Name, ".klp.rela.vmlinux.") {
			t.Errorf("%s: flags %v, target %s", s.Name, s.Flags, k.Sections[s.Info].Name)
		}
		if s.Name == ".klp.rela.vmlinux"+text && len(d) > 0 {
			found = true
		}
	}
	if !found {
		t.Errorf("no .klp.rela.vmlinux%s section", text)
	}
}

func TestBuildRefusesDataChange(t *testing.T) {
	pre := compile(t, base...)
	post := compile(t, with("TABLE3=5", `EXTRA=printk("x");`)...)
	_, err := Build([]Unit{{Rel: "fs/unit.o", Object: "vmlinux", Pre: pre, Post: post}}, nil)
	var re *objdiff.RefusedError
	if !errors.As(err, &re) || re.Symbol != "table" || re.File != "unit.c" || !strings.Contains(re.Reason, "initial value") {
		t.Fatalf("want a refusal naming unit.c, table and the reason, got %v", err)
	}
}

// TestBuildCopiesParavirt: the paravirt patch site of a changed function
// is copied into the module's .parainstructions, pointing at the new code,
// for the module loader to patch.
func TestBuildCopiesParavirt(t *testing.T) {
	pre := compile(t, with("ALT="+paraEntry)...)
	post := compile(t, with("ALT="+paraEntry, `EXTRA=printk("x");`)...)
	r, err := Build([]Unit{{Rel: "fs/unit.o", Object: "vmlinux", Pre: pre, Post: post}}, map[string]bool{"printk": true})
	if err != nil {
		t.Fatal(err)
	}
	o, err := elf.NewFile(bytes.NewReader(r.Object))
	if err != nil {
		t.Fatal(err)
	}
	pv := o.Section(".parainstructions")
	if pv == nil || pv.Size != 16 {
		t.Fatalf("paravirt site not copied: %v", pv)
	}
	d, _ := pv.Data()
	if d[8] != 1 || d[9] != 1 {
		t.Errorf("type and length of the site not kept: % x", d)
	}
	syms, _ := o.Symbols()
	for _, s := range o.Sections {
		if s.Type == elf.SHT_RELA && s.Info == uint32(sectionIndexOf(o, pv)) {
			rd, _ := s.Data()
			if len(rd) != 24 {
				t.Fatalf("want one relocation of the site, got %d bytes", len(rd))
			}
			y := syms[int(binary.LittleEndian.Uint64(rd[8:])>>32)-1]
			if elf.ST_TYPE(y.Info) != elf.STT_SECTION || o.Sections[y.Section].Name != ".text.show" {
				t.Errorf("the site points at %s, want .text.show", y.Name)
			}
		}
	}
}

func TestBuildCopiesAlternatives(t *testing.T) {
	pre := compile(t, with("ALT="+altEntry)...)
	post := compile(t, with("ALT="+altEntry, `EXTRA=printk("x");`)...)
	r, err := Build([]Unit{{Rel: "fs/unit.o", Object: "vmlinux", Pre: pre, Post: post}}, map[string]bool{"printk": true})
	if err != nil {
		t.Fatal(err)
	}
	o, err := elf.NewFile(bytes.NewReader(r.Object))
	if err != nil {
		t.Fatal(err)
	}
	alt, repl := o.Section(".altinstructions"), o.Section(".altinstr_replacement")
	if alt == nil || alt.Size != 12 || repl == nil || repl.Size != 5 {
		t.Fatalf("alternative not copied: %v %v", alt, repl)
	}
	syms, _ := o.Symbols()
	targets := map[string]bool{}
	for _, s := range o.Sections {
		if s.Type != elf.SHT_RELA || (s.Info != uint32(sectionIndexOf(o, alt)) && s.Info != uint32(sectionIndexOf(o, repl))) {
			continue
		}
		d, _ := s.Data()
		for i := 0; i+24 <= len(d); i += 24 {
			y := syms[int(binary.LittleEndian.Uint64(d[i+8:])>>32)-1]
			name := y.Name
			if elf.ST_TYPE(y.Info) == elf.STT_SECTION {
				name = o.Sections[y.Section].Name
			}
			targets[name] = true
		}
	}
	for _, want := range []string{".text.show", ".altinstr_replacement", "printk"} {
		if !targets[want] {
			t.Errorf("alternative relocations miss %s: %v", want, targets)
		}
	}
}

func sectionIndexOf(f *elf.File, s *elf.Section) int {
	for i, x := range f.Sections {
		if x == s {
			return i
		}
	}
	return -1
}

func TestBuildNoChange(t *testing.T) {
	pre := compile(t, base...)
	// A different line number only (kbuild's __LINE__ in WARN/BUG lives in
	// __bug_table, set aside) and identical code: nothing to patch.
	_, err := Build([]Unit{{Rel: "fs/unit.o", Object: "vmlinux", Pre: pre, Post: compile(t, base...)}}, nil)
	if !errors.Is(err, ErrNoChange) {
		t.Fatalf("want ErrNoChange, got %v", err)
	}
}

func TestNeutralizeHidesMetadata(t *testing.T) {
	obj := compile(t, base...)
	n, err := neutralize(obj)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(n))
	if err != nil {
		t.Fatal(err)
	}
	s := f.Section("__ex_table")
	if s == nil || s.Flags&elf.SHF_ALLOC != 0 {
		t.Fatalf("__ex_table still allocated: %v", s)
	}
	if f.Section(".text.show").Flags&elf.SHF_ALLOC == 0 {
		t.Fatal("code section lost SHF_ALLOC")
	}
	if _, err := neutralize([]byte("not elf")); err == nil {
		t.Fatal("garbage accepted")
	}
}

func TestFixModuleRejectsGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, []byte("\x7fELF"), bytes.Repeat([]byte{0}, 64)} {
		if _, err := FixModule(b); err == nil {
			t.Errorf("FixModule accepted %q", b)
		}
	}
	// A module without livepatch symbols is returned unchanged.
	obj := compile(t, base...)
	out, err := FixModule(obj)
	if err != nil || !bytes.Equal(out, obj) {
		t.Fatalf("plain object changed: %v", err)
	}
}

func TestBuildCallbacks(t *testing.T) {
	pre := compile(t, base...)
	post := compile(t, with(callback)...)
	r, err := Build([]Unit{{Rel: "fs/unit.o", Object: "vmlinux", Pre: pre, Post: post}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(r.Stub, []byte(".callbacks = { .pre_patch = __livesplice_cb_pre_patch_")) || !bytes.Contains(r.Stub, []byte("extern int __livesplice_cb_pre_patch_")) {
		t.Fatalf("stub has no pre_patch callback:\n%s", r.Stub)
	}
	o, err := elf.NewFile(bytes.NewReader(r.Object))
	if err != nil {
		t.Fatal(err)
	}
	syms, _ := o.Symbols()
	for _, y := range syms {
		if strings.HasPrefix(y.Name, "__livesplice_cb_pre_patch_") {
			if n := o.Sections[y.Section].Name; n != ".text.my_pre" || elf.ST_BIND(y.Info) != elf.STB_GLOBAL {
				t.Fatalf("callback alias in %s", n)
			}
			return
		}
	}
	t.Fatal("no callback alias in the object")
}

func TestKpatchMacrosHeader(t *testing.T) {
	for _, m := range []string{"KLP_PRE_PATCH_CALLBACK", "KLP_POST_UNPATCH_CALLBACK", "KPATCH_IGNORE_FUNCTION", "patch_object", callbackPrefix + "\" #kind"} {
		if !bytes.Contains(KpatchMacros, []byte(m)) {
			t.Errorf("kpatch-macros.h lacks %s", m)
		}
	}
}

// symposUnit mimics the stub's table of old_sympos fields.
const symposUnit = `
struct klp_func_like { const char *old_name; void *new_func; unsigned long old_sympos; };
static struct klp_func_like funcs[] = { { "show", 0, 0 }, { "other", 0, 0 }, { 0 } };
struct livesplice_sympos { const char *object, *name; unsigned long *sympos; };
static const struct livesplice_sympos tab[] __attribute__((used, section(".livesplice.sympos"))) = {
	{ "vmlinux", "show", &funcs[0].old_sympos },
	{ "ext4", "other", &funcs[1].old_sympos },
};
void *keep(void) { return funcs; }
`

func TestSympos(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "s.c"), []byte(symposUnit), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("gcc", "-O2", "-c", "-fdata-sections", "-o", filepath.Join(dir, "s.o"), filepath.Join(dir, "s.c")).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	ko, err := os.ReadFile(filepath.Join(dir, "s.o"))
	if err != nil {
		t.Fatal(err)
	}
	fs, err := Funcs(ko)
	if err != nil || len(fs) != 2 || fs[0].Object != "vmlinux" || fs[0].Name != "show" || fs[1].Object != "ext4" || fs[1].Name != "other" {
		t.Fatalf("Funcs: %+v %v", fs, err)
	}
	m, err := SetFuncSympos(ko, "ext4", "other", 3)
	if err != nil {
		t.Fatal(err)
	}
	if fs, err = Funcs(m); err != nil || fs[0].Sympos != 0 || fs[1].Sympos != 3 {
		t.Fatalf("after SetFuncSympos: %+v %v", fs, err)
	}
	if _, err := SetFuncSympos(ko, "vmlinux", "other", 1); err == nil {
		t.Fatal("a function of another object was set")
	}

	r, err := Build([]Unit{{Rel: "fs/unit.o", Object: "vmlinux", Pre: compile(t, base...), Post: compile(t, with(`EXTRA=printk("x");`)...)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err = SetSymbolSympos(r.Object, "vmlinux", "hidden_counter", 2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(m, []byte("\x00.klp.sym.vmlinux.hidden_counter,2\x00")) || bytes.Contains(m, []byte(".klp.sym.vmlinux.hidden_counter,0")) {
		t.Fatal("symbol position not rewritten")
	}
	if _, err := SetSymbolSympos(r.Object, "vmlinux", "hidden_counter", 10); err == nil {
		t.Fatal("a two-digit position was accepted")
	}
}

func TestBuildRefusesZeroToValue(t *testing.T) {
	pre := compile(t, base...)
	post := compile(t, with("COUNTER== 1")...)
	_, err := Build([]Unit{{Rel: "fs/unit.o", Object: "vmlinux", Pre: pre, Post: post}}, nil)
	var re *objdiff.RefusedError
	if !errors.As(err, &re) || re.Symbol != "counter" || re.File != "unit.c" || !strings.Contains(re.Reason, "initial value") || !strings.Contains(re.Reason, "was .bss.counter") {
		t.Fatalf("want a refusal naming unit.c, counter and the reason, got %v", err)
	}
}

// hooks is what livesplice.h's hook macros leave in a kernel unit.
const hooks = `CALLBACK=` +
	`static int my_veto(void) { return counter; } static int (*const my_veto_ptr)(void) __attribute__((used, section(".livesplice.hook.pre_apply.1"))) = my_veto;` +
	`static void my_post(void) { counter++; } static void (*const my_post_ptr)(void) __attribute__((used, section(".livesplice.hook.post_undo.2"))) = my_post;` +
	`static void my_fail(void) { counter--; } static void (*const my_fail_ptr)(void) __attribute__((used, section(".livesplice.hook.fail_apply.3"))) = my_fail;`

func TestBuildHooks(t *testing.T) {
	pre := compile(t, base...)
	post := compile(t, with(hooks)...)
	r, err := Build([]Unit{{Rel: "fs/unit.o", Object: "vmlinux", Pre: pre, Post: post}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"extern int __livesplice_hook_pre_apply_",
		"pre_apply hook my_veto vetoed the update",
		"return -ECANCELED;",
		".callbacks = { .pre_patch = livesplice_pre_patch_0, .post_patch = livesplice_post_patch_0, .pre_unpatch = livesplice_pre_unpatch_0, .post_unpatch = livesplice_post_unpatch_0, }",
	} {
		if !bytes.Contains(r.Stub, []byte(want)) {
			t.Errorf("stub lacks %q:\n%s", want, r.Stub)
		}
	}
	// post_unpatch runs FAIL_APPLY hooks unless post_patch ran, POST_UNDO ones after it.
	s := string(r.Stub)
	unpatch := s[strings.Index(s, "static void livesplice_post_unpatch_0"):]
	if f, p := strings.Index(unpatch, "livesplice_fail_apply_0();"), strings.Index(unpatch, "__livesplice_hook_post_undo_"); f < 0 || p < f {
		t.Errorf("post_unpatch does not run fail_apply, then post_undo:\n%s", unpatch)
	}
	o, err := elf.NewFile(bytes.NewReader(r.Object))
	if err != nil {
		t.Fatal(err)
	}
	syms, _ := o.Symbols()
	found := 0
	for _, y := range syms {
		if strings.HasPrefix(y.Name, "__livesplice_hook_") && elf.ST_BIND(y.Info) == elf.STB_GLOBAL {
			found++
		}
	}
	if found != 3 {
		t.Errorf("%d hook aliases in the object, want 3", found)
	}
}

func TestBuildRefusesUnsupportedHook(t *testing.T) {
	pre := compile(t, base...)
	post := compile(t, with(`CALLBACK=static int my_check(void) { return 0; } static int (*const my_check_ptr)(void) __attribute__((used, section(".livesplice.hook.check_apply.0"))) = my_check;`)...)
	_, err := Build([]Unit{{Rel: "fs/unit.o", Object: "vmlinux", Pre: pre, Post: post}}, nil)
	var re *objdiff.RefusedError
	if !errors.As(err, &re) || re.Symbol != "my_check" || !strings.Contains(re.Reason, "LIVESPLICE_CHECK_APPLY hook") {
		t.Fatalf("err = %v, want a refusal naming my_check and LIVESPLICE_CHECK_APPLY", err)
	}
}

// A hook that the pre build has too belongs to an earlier update (the tree
// of a stacked update has that update's patch): it is not run again.
func TestBuildSkipsEarlierHooks(t *testing.T) {
	pre := compile(t, with(hooks)...)
	post := compile(t, with(hooks, `EXTRA=printk("show %d\n", v);`)...)
	r, err := Build([]Unit{{Rel: "fs/unit.o", Object: "vmlinux", Pre: pre, Post: post}}, map[string]bool{"printk": true})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(r.Stub, []byte("__livesplice_hook_")) || bytes.Contains(r.Stub, []byte(".callbacks")) {
		t.Fatalf("stub runs the earlier update's hooks:\n%s", r.Stub)
	}
}
