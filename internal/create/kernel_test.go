package create

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"livesplice/internal/klp"
	"livesplice/internal/objdiff"
	"livesplice/internal/update"
)

// kernelLab finds the Debian kernel pieces scripts/kernel-lab.sh unpacks:
// source tree, config and headers of one release.
func kernelLab(t *testing.T) (src, config, headers string) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs the kernel lab (make test sets it up)")
	}
	lab := os.Getenv("LIVESPLICE_LAB")
	if lab == "" {
		lab = "/var/cache/livesplice-lab"
	}
	if _, err := os.Stat(filepath.Join(lab, "src", ".done")); err != nil {
		t.Fatalf("kernel lab not found in %s (%v): run scripts/kernel-lab.sh first (it fetches the Debian kernel source, config and headers)", lab, err)
	}
	one := func(pattern string) string {
		m, _ := filepath.Glob(filepath.Join(lab, pattern))
		if len(m) == 0 {
			t.Fatalf("kernel lab %s has no %s: run scripts/kernel-lab.sh", lab, pattern)
		}
		return m[0]
	}
	src = one("src/linux-source-*[0-9]")
	config = one("root/boot/config-*")
	headers = one("root/usr/src/linux-headers-*-amd64")
	if os.Geteuid() != 0 {
		t.Fatal("create --kernel compiles the post units in a private mount namespace: run the test as root")
	}
	return src, config, headers
}

// kernelPatch writes a patch of one file of the source tree that replaces
// each old string by its new one (pairs).
func kernelPatch(t *testing.T, src, file string, oldNew ...string) string {
	t.Helper()
	orig, err := os.ReadFile(filepath.Join(src, file))
	if err != nil {
		t.Fatal(err)
	}
	patched := orig
	for i := 0; i+1 < len(oldNew); i += 2 {
		if !bytes.Contains(patched, []byte(oldNew[i])) {
			t.Fatalf("%s does not contain %q", file, oldNew[i])
		}
		patched = bytes.Replace(patched, []byte(oldNew[i]), []byte(oldNew[i+1]), 1)
	}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	if err := os.WriteFile(a, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, patched, 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("diff", "-u", "--label", "a/"+file, "--label", "b/"+file, a, b).Output()
	if len(out) == 0 {
		t.Fatal("diff produced no patch")
	}
	p := filepath.Join(dir, strings.TrimSuffix(filepath.Base(file), ".c")+".patch")
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCreateKernelCmdline builds the README's example against the real
// Debian tree: /proc/cmdline prints an extra word. The module must be a
// livepatch for the headers' release, reach the non-exported
// saved_command_line through a livepatch relocation, and the update must
// carry the pre code of cmdline_proc_show.
func TestCreateKernelCmdline(t *testing.T) {
	src, config, headers := kernelLab(t)
	p := kernelPatch(t, src, "fs/proc/cmdline.c", "\tseq_putc(m, '\\n');", "\tseq_puts(m, \" livesplice\");\n\tseq_putc(m, '\\n');")
	start := time.Now()
	f, err := CreateKernel(context.Background(), KernelOptions{Src: src, Config: config, Headers: headers, Patch: p})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("create --kernel took %.1fs", time.Since(start).Seconds())
	data, err := update.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if f, err = update.Unmarshal(data); err != nil {
		t.Fatal(err)
	}
	rel, _ := os.ReadFile(filepath.Join(headers, "include/generated/utsrelease.h"))
	if f.Kind != update.KindKernel || f.ID != "cmdline" || f.Kernel.ModuleName != "livesplice_cmdline" || !strings.Contains(string(rel), `"`+f.Kernel.Release+`"`) {
		t.Fatalf("update: kind %s id %s module %s release %s", f.Kind, f.ID, f.Kernel.ModuleName, f.Kernel.Release)
	}
	if len(f.Targets) != 1 || f.Targets[0].Path != "vmlinux" || len(f.Targets[0].Functions) != 1 {
		t.Fatalf("targets: %+v", f.Targets)
	}
	fn := f.Targets[0].Functions[0]
	if fn.Name != "cmdline_proc_show" || fn.File != "cmdline.c" || fn.Section != -1 || fn.Pre == nil || len(fn.Pre.Relocs) == 0 {
		t.Fatalf("function: %+v", fn)
	}
	if y := f.Targets[0].Symbols[fn.Symbol]; y.Kind != update.SymLocal || y.Name != "cmdline_proc_show" {
		t.Fatalf("function symbol: %+v", y)
	}

	ko := filepath.Join(t.TempDir(), f.Kernel.ModuleName+".ko")
	if err := os.WriteFile(ko, f.Kernel.Module, 0o644); err != nil {
		t.Fatal(err)
	}
	for field, want := range map[string]string{"livepatch": "Y", "name": "livesplice_cmdline", "license": "GPL"} {
		out, err := exec.Command("modinfo", "-F", field, ko).Output()
		if err != nil {
			t.Fatalf("modinfo (install kmod): %v", err)
		}
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("modinfo %s = %q, want %q", field, got, want)
		}
	}
	out, _ := exec.Command("modinfo", "-F", "vermagic", ko).Output()
	if !strings.HasPrefix(string(out), f.Kernel.Release+" ") {
		t.Errorf("vermagic %q is not for release %s", out, f.Kernel.Release)
	}
	klpRelocs(t, f.Kernel.Module, ".klp.rela.vmlinux.text.cmdline_proc_show", ".klp.sym.vmlinux.saved_command_line,0")

	// apply may set the positions it learned by run-pre matching.
	fs, err := klp.Funcs(f.Kernel.Module)
	if err != nil || len(fs) != 1 || fs[0].Object != "vmlinux" || fs[0].Name != "cmdline_proc_show" || fs[0].Sympos != 0 {
		t.Fatalf("module functions: %+v %v", fs, err)
	}
	m, err := klp.SetFuncSympos(f.Kernel.Module, "vmlinux", "cmdline_proc_show", 2)
	if err != nil {
		t.Fatal(err)
	}
	if fs, err = klp.Funcs(m); err != nil || fs[0].Sympos != 2 {
		t.Fatalf("old_sympos not set: %+v %v", fs, err)
	}
	if m, err = klp.SetSymbolSympos(m, "vmlinux", "saved_command_line", 3); err != nil {
		t.Fatal(err)
	}
	klpRelocs(t, m, ".klp.rela.vmlinux.text.cmdline_proc_show", ".klp.sym.vmlinux.saved_command_line,3")
}

// klpRelocs checks that the module's livepatch relocation section sec is
// well formed and refers to sym.
func klpRelocs(t *testing.T, ko []byte, sec, sym string) {
	t.Helper()
	k, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		t.Fatal(err)
	}
	syms, err := k.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	s := k.Section(sec)
	if s == nil {
		t.Fatalf("module has no %s", sec)
	}
	if s.Type != elf.SHT_RELA || s.Flags&0x00100000 == 0 || s.Flags&elf.SHF_ALLOC == 0 || s.Entsize != 24 || k.Sections[s.Link].Type != elf.SHT_SYMTAB ||
		"/.klp.rela.vmlinux"+k.Sections[s.Info].Name != "/"+sec {
		t.Fatalf("%s: type %v flags %#x link %d info %d", sec, s.Type, uint64(s.Flags), s.Link, s.Info)
	}
	d, err := s.Data()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for o := 0; o+24 <= len(d); o += 24 {
		si := int(binary.LittleEndian.Uint64(d[o+8:]) >> 32)
		if si < 1 || si > len(syms) {
			t.Fatalf("%s: symbol index %d", sec, si)
		}
		y := syms[si-1]
		if !strings.HasPrefix(y.Name, ".klp.sym.vmlinux.") || y.Section != 0xff20 || !strings.Contains(y.Name, ",") {
			t.Errorf("%s refers to %s (section %#x), not a livepatch symbol", sec, y.Name, uint16(y.Section))
		}
		found = found || y.Name == sym
	}
	if !found {
		t.Errorf("%s has no relocation to %s", sec, sym)
	}
}

// TestCreateKernelRefusesDataChange: a changed initial value of an existing
// kernel variable cannot be carried by a livepatch.
func TestCreateKernelRefusesDataChange(t *testing.T) {
	src, config, headers := kernelLab(t)
	p := kernelPatch(t, src, "kernel/exit.c", "static unsigned int oops_limit = 10000;", "static unsigned int oops_limit = 20000;")
	_, err := CreateKernel(context.Background(), KernelOptions{Src: src, Config: config, Headers: headers, Patch: p})
	var re *objdiff.RefusedError
	if !errors.As(err, &re) || re.File != "exit.c" || re.Symbol != "oops_limit" || !strings.Contains(re.Reason, "initial value") {
		t.Fatalf("want a refusal naming exit.c, oops_limit and the reason, got %v", err)
	}
}

// TestCreateKernelKpatchPatch: a patch written for kpatch-build (it
// includes "kpatch-macros.h", registers callbacks and uses a shadow
// variable) builds unchanged; the module declares the callbacks.
func TestCreateKernelKpatchPatch(t *testing.T) {
	src, config, headers := kernelLab(t)
	p := kernelPatch(t, src, "fs/proc/cmdline.c", "#include <linux/seq_file.h>\n", `#include <linux/seq_file.h>
#include <linux/livepatch.h>
#include "kpatch-macros.h"

static int fix_pre_patch(patch_object *obj)
{
	pr_info("fix: pre_patch\n");
	return 0;
}
KLP_PRE_PATCH_CALLBACK(fix_pre_patch);

static void fix_post_unpatch(patch_object *obj)
{
	pr_info("fix: post_unpatch\n");
}
KLP_POST_UNPATCH_CALLBACK(fix_post_unpatch);

static int shadow_count(void *obj)
{
	int *n = klp_shadow_get_or_alloc(obj, 0x15, sizeof(int), GFP_KERNEL, NULL, NULL);

	return n ? ++*n : 0;
}
`, "\tseq_putc(m, '\\n');", "\tseq_printf(m, \" %d\", shadow_count(m));\n\tseq_putc(m, '\\n');")
	f, err := CreateKernel(context.Background(), KernelOptions{Src: src, Config: config, Headers: headers, Patch: p, ID: "kpatch-style"})
	if err != nil {
		t.Fatal(err)
	}
	if f.Kernel.ModuleName != "livesplice_kpatch_style" {
		t.Errorf("module name %s", f.Kernel.ModuleName)
	}
	k, err := elf.NewFile(bytes.NewReader(f.Kernel.Module))
	if err != nil {
		t.Fatal(err)
	}
	syms, err := k.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, y := range syms {
		if strings.HasPrefix(y.Name, "__livesplice_cb_pre_patch_") {
			have["callback"] = true
		}
		if y.Section == elf.SHN_UNDEF {
			have["undef:"+y.Name] = true
		}
	}
	if len(f.Targets) != 1 || len(f.Targets[0].Functions) != 1 || f.Targets[0].Functions[0].Name != "cmdline_proc_show" {
		t.Errorf("targets: %+v", f.Targets)
	}
	if !have["callback"] {
		t.Error("the module has no pre_patch callback")
	}
	if !have["undef:klp_shadow_get_or_alloc"] {
		t.Error("klp_shadow_get_or_alloc is not an ordinary (exported) reference")
	}
}
