package e2e

import (
	"os"
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
			expect := func(name string, rc int, out string) {
				t.Helper()
				s, ok := steps[name]
				if !ok {
					t.Errorf("step %s did not run", name)
					return
				}
				if s.RC != rc || !strings.Contains(s.Out, out) {
					t.Errorf("step %s: exit %d, want %d with %q; output:\n%s", name, s.RC, rc, out, s.Out)
				}
			}
			expect("bad", 3, "run-pre match n_tty_write")
			expect("bad", 3, "retpoline site")
			expect("apply", 0, "run-pre matched n_tty_write")
			expect("cmdline", 0, "this has been live patched")
			expect("undo", 0, "")
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
