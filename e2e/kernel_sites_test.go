package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"livesplice/e2e/kernellab"
	"livesplice/internal/update"
)

// TestKernelRetpolineSites: run-pre matching of a function whose indirect
// calls the kernel rewrites at boot (n_tty_write: `call
// __x86_indirect_thunk_rax` through tty->ops->write), on machines where
// apply_retpolines leaves the site in different forms: -cpu max (RETPOLINE:
// the call to the thunk stays; kallsyms also names that address
// __x86_indirect_thunk_array), an Intel model with spectre_v2=ibrs (no
// RETPOLINE: `call *%rax`, or on ITS-affected addresses a call to an ITS
// thunk) and spectre_v2=off (`call *%rax` padded). In each boot the update
// (the kernel's sample livepatch, with n_tty_write's pre code compiled from
// drivers/tty/n_tty.c among its functions) applies and is undone, and the
// same update whose thunk relocation names another register is refused
// (exit 3) naming the retpoline site, nothing loaded.
func TestKernelRetpolineSites(t *testing.T) {
	lab := kernelLab(t)
	work := t.TempDir()
	bin := staticLivesplice(t, work)

	mod := filepath.Join(work, "mod")
	os.MkdirAll(mod, 0o755)
	sample, err := os.ReadFile(filepath.Join(lab.Src, "samples/livepatch/livepatch-sample.c"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(mod, "livepatch-sample.c"), sample, 0o644)
	os.WriteFile(filepath.Join(mod, "Kbuild"), []byte("obj-m := livepatch-sample.o\n"), 0o644)
	unit := filepath.Join(work, "unit")
	os.MkdirAll(unit, 0o755)
	for _, f := range []string{"fs/proc/cmdline.c", "fs/proc/internal.h", "drivers/tty/n_tty.c", "drivers/tty/tty.h"} {
		d, err := os.ReadFile(filepath.Join(lab.Src, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(unit, filepath.Base(f)), d, 0o644)
	}
	os.WriteFile(filepath.Join(unit, "Kbuild"), []byte("obj-m := cmdline.o n_tty.o\nccflags-y := -include linux/module.h\n"), 0o644)
	if err := lab.Make(mod, "modules"); err != nil {
		t.Fatal(err)
	}
	if err := lab.Make(unit, "cmdline.o", "n_tty.o"); err != nil {
		t.Fatal(err)
	}
	var syms []update.Symbol
	preCmd, selfCmd, err := kernellab.FuncCode(filepath.Join(unit, "cmdline.o"), "cmdline_proc_show", "fs/proc/cmdline.c", &syms)
	if err != nil {
		t.Fatal(err)
	}
	preTty, selfTty, err := kernellab.FuncCode(filepath.Join(unit, "n_tty.o"), "n_tty_write", "drivers/tty/n_tty.c", &syms)
	if err != nil {
		t.Fatal(err)
	}
	thunks := 0
	for _, r := range preTty.Relocs {
		if strings.HasPrefix(syms[r.Symbol].Name, "__x86_indirect_thunk_") {
			thunks++
		}
	}
	if thunks == 0 {
		t.Fatal("n_tty_write has no retpoline site: nothing to test")
	}
	ko, err := os.ReadFile(filepath.Join(mod, "livepatch-sample.ko"))
	if err != nil {
		t.Fatal(err)
	}
	mk := func(id string, tty *update.Code, syms []update.Symbol) *update.File {
		return &update.File{ID: id, Kind: update.KindKernel, Patch: strings.Repeat("0", 64),
			Kernel: &update.Kernel{Release: lab.Release, ModuleName: "livepatch_sample", Module: ko},
			Targets: []update.Target{{Path: "vmlinux", Sections: []update.Section{}, Symbols: syms,
				Functions: []update.Function{
					{Name: "cmdline_proc_show", File: "fs/proc/cmdline.c", Status: update.StatusReplaced,
						Symbol: selfCmd, Section: -1, Size: uint64(len(preCmd.Data)), Pre: preCmd},
					{Name: "n_tty_write", File: "drivers/tty/n_tty.c", Status: update.StatusReplaced,
						Symbol: selfTty, Section: -1, Size: uint64(len(preTty.Data)), Pre: tty},
				}}}}
	}
	good := mk("sites", preTty, syms)
	// The same code with the first thunk call naming another register's
	// thunk: the running site (in any of its forms) is not that.
	badSyms := append([]update.Symbol(nil), syms...)
	badTty := &update.Code{Data: preTty.Data, Relocs: append([]update.Reloc(nil), preTty.Relocs...)}
	for i, r := range badTty.Relocs {
		if n := syms[r.Symbol].Name; strings.HasPrefix(n, "__x86_indirect_thunk_") {
			other := "__x86_indirect_thunk_rdx"
			if n == other {
				other = "__x86_indirect_thunk_rcx"
			}
			badSyms = append(badSyms, update.Symbol{Kind: update.SymGlobal, Name: other})
			badTty.Relocs[i].Symbol = len(badSyms) - 1
			break
		}
	}
	bad := mk("sites-bad", badTty, badSyms)

	initrd := filepath.Join(work, "initrd.cpio")
	err = kernellab.Initramfs(initrd, []kernellab.File{
		{Src: bin, Dst: "/livesplice"},
		{Src: writeUpdate(t, work, good), Dst: "/u/good.lsu"},
		{Src: writeUpdate(t, work, bad), Dst: "/u/bad.lsu"},
	}, `
step mode cat /sys/devices/system/cpu/vulnerabilities/spectre_v2
step bad /livesplice apply --kernel /u/bad.lsu
step after-bad sh -c 'ls /sys/kernel/livepatch; cat /proc/modules'
step apply /livesplice apply --kernel -v /u/good.lsu
step cmdline cat /proc/cmdline
step undo /livesplice undo --kernel sites
step final sh -c 'ls /sys/kernel/livepatch; cat /proc/modules'
`)
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range []kernellab.VM{
		{CPU: "max"},
		{CPU: "Haswell-noTSX-IBRS", Append: "spectre_v2=ibrs"},
		{CPU: "max", Append: "spectre_v2=off"},
	} {
		t.Run(vm.CPU+" "+vm.Append, func(t *testing.T) {
			console, err := kernellab.BootWith(lab.Vmlinuz, initrd, vmTimeout, vm)
			if err != nil {
				t.Fatalf("%v\nconsole:\n%s", err, console)
			}
			steps := kernellab.ParseSteps(console)
			t.Logf("spectre_v2: %s", strings.TrimSpace(steps["mode"].Out))
			expectStep(t, steps, "bad", 3, "run-pre match n_tty_write")
			expectStep(t, steps, "bad", 3, "retpoline site")
			expectStep(t, steps, "apply", 0, "run-pre matched n_tty_write")
			expectStep(t, steps, "cmdline", 0, "this has been live patched")
			expectStep(t, steps, "undo", 0, "")
			for _, n := range []string{"after-bad", "final"} {
				if s := steps[n]; strings.TrimSpace(s.Out) != "" {
					t.Errorf("%s: something is left loaded:\n%s", n, s.Out)
				}
			}
			if t.Failed() {
				t.Logf("console:\n%s", console)
			}
		})
	}
}

// TestKernelKpatchFeatures: what kpatch-build patches use, created from
// this repository's patches to the Debian source and applied in one boot:
//   - kpatch-syscall.h (syscall.patch): KPATCH_SYSCALL_DEFINE1(newuname)
//     adds "-spliced" to `uname -s`;
//   - pr_debug in a changed function (dyndbg.patch, kernel/params.c): the
//     new descriptor is the module's, enabled through dynamic_debug/control,
//     and prints when a module is loaded with arguments; the descriptors
//     below it, whose line numbers moved, are no change;
//   - static_cpu_has in a changed function (cpuhas.patch,
//     meminfo_proc_show jumps into .altinstr_aux): /proc/meminfo gains a line;
//   - read-only data in run-pre matching (loadavg.patch): built from a copy
//     of the source whose /proc/loadavg format string differs from the
//     running kernel's, the update is refused (exit 3) naming the data;
//     built from the original source it applies.
//
// Each is undone, and nothing is left loaded.
func TestKernelKpatchFeatures(t *testing.T) {
	lab := kernelLab(t)
	work := t.TempDir()
	bin := staticLivesplice(t, work)
	create := func(src, id, patch string) string {
		t.Helper()
		lsu := filepath.Join(work, id+".lsu")
		abs, err := filepath.Abs(filepath.Join("testdata/kernel", patch))
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(livesplice, "create", "--kernel", "--src", src, "--config", lab.Config,
			"--headers", lab.Headers, "--id", id, "-o", lsu, abs).CombinedOutput()
		if err != nil {
			t.Fatalf("create --kernel %s: %v\n%s", patch, err, out)
		}
		return lsu
	}
	sys := create(lab.Src, "syscall", "syscall.patch")
	dd := create(lab.Src, "dyndbg", "dyndbg.patch")
	aux := create(lab.Src, "cpuhas", "cpuhas.patch")
	ro := create(lab.Src, "loadavg", "loadavg.patch")
	// A source whose loadavg format differs from the running kernel's.
	other := filepath.Join(t.TempDir(), "linux")
	if out, err := exec.Command("cp", "-al", lab.Src, other).CombinedOutput(); err != nil {
		t.Fatalf("cp -al: %v\n%s", err, out)
	}
	la := filepath.Join(other, "fs/proc/loadavg.c")
	src, err := os.ReadFile(la)
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(src), `"%lu.%02lu %lu.%02lu %lu.%02lu %u/%d %d\n"`, `"%lu.%02lu %lu.%02lu %lu.%02lu %u/%d %d \n"`, 1)
	if changed == string(src) {
		t.Fatal("loadavg.c has no format string to change")
	}
	os.Remove(la) // a hard link to the original source: replace, not write
	if err := os.WriteFile(la, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	roBad := create(other, "loadavg-other", "loadavg.patch")

	dummy := filepath.Join(lab.Modules, "kernel/drivers/net/dummy.ko")
	initrd := filepath.Join(work, "initrd.cpio")
	err = kernellab.Initramfs(initrd, []kernellab.File{
		{Src: bin, Dst: "/livesplice"},
		{Src: sys, Dst: "/u/syscall.lsu"},
		{Src: dd, Dst: "/u/dyndbg.lsu"},
		{Src: aux, Dst: "/u/cpuhas.lsu"},
		{Src: ro, Dst: "/u/loadavg.lsu"},
		{Src: roBad, Dst: "/u/loadavg-other.lsu"},
		{Src: dummy, Dst: "/m/dummy.ko", Mode: 0o644},
	}, `
step sys-apply /livesplice apply --kernel /u/syscall.lsu
step sys-uname uname -s
step sys-undo /livesplice undo --kernel syscall
step sys-after uname -s
step dd-apply /livesplice apply --kernel /u/dyndbg.lsu
step dd-on sh -c 'mount -t debugfs none /sys/kernel/debug && echo "func parse_args +p" > /sys/kernel/debug/dynamic_debug/control'
step dd-insmod insmod /m/dummy.ko numdummies=0
step dd-dmesg sh -c 'dmesg | grep "parsing ARGS"'
step dd-undo sh -c 'rmmod dummy; /livesplice undo --kernel dyndbg'
step aux-apply /livesplice apply --kernel /u/cpuhas.lsu
step aux-meminfo grep Spliced /proc/meminfo
step aux-undo /livesplice undo --kernel cpuhas
step aux-after sh -c 'grep -c Spliced /proc/meminfo; true'
step ro-bad /livesplice apply --kernel /u/loadavg-other.lsu
step ro-after-bad sh -c 'ls /sys/kernel/livepatch; cat /proc/modules'
step ro-apply /livesplice apply --kernel /u/loadavg.lsu
step ro-cat cat /proc/loadavg
step ro-undo /livesplice undo --kernel loadavg
step final sh -c 'ls /sys/kernel/livepatch; cat /proc/modules; /livesplice show --kernel'
`)
	if err != nil {
		t.Fatal(err)
	}
	console, err := kernellab.Boot(lab.Vmlinuz, initrd, vmTimeout)
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, console)
	}
	steps := kernellab.ParseSteps(console)
	defer func() {
		if t.Failed() {
			t.Logf("console:\n%s", console)
		}
	}()
	expectStep(t, steps, "sys-apply", 0, "")
	expectStep(t, steps, "sys-uname", 0, "Linux-spliced")
	expectStep(t, steps, "sys-undo", 0, "")
	if s := steps["sys-after"]; strings.TrimSpace(s.Out) != "Linux" {
		t.Errorf("after undo, uname -s = %q", s.Out)
	}
	expectStep(t, steps, "dd-apply", 0, "")
	expectStep(t, steps, "dd-on", 0, "")
	expectStep(t, steps, "dd-insmod", 0, "")
	expectStep(t, steps, "dd-dmesg", 0, "parsing ARGS (spliced): 'numdummies=0")
	expectStep(t, steps, "dd-undo", 0, "")
	expectStep(t, steps, "aux-apply", 0, "")
	expectStep(t, steps, "aux-meminfo", 0, "Spliced:        1")
	expectStep(t, steps, "aux-undo", 0, "")
	expectStep(t, steps, "aux-after", 0, "0")
	expectStep(t, steps, "ro-bad", 3, "read-only data")
	expectStep(t, steps, "ro-bad", 3, "run-pre match loadavg_proc_show")
	if s := steps["ro-after-bad"]; strings.TrimSpace(s.Out) != "" {
		t.Errorf("after a refused apply, something is loaded:\n%s", s.Out)
	}
	expectStep(t, steps, "ro-apply", 0, "")
	expectStep(t, steps, "ro-cat", 0, "# spliced")
	expectStep(t, steps, "ro-undo", 0, "")
	if s := steps["final"]; strings.TrimSpace(s.Out) != "" {
		t.Errorf("after undo, something is left loaded or recorded:\n%s", s.Out)
	}
}
