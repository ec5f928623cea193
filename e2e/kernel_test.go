package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"livesplice/e2e/kernellab"
	"livesplice/internal/kbuild"
	"livesplice/internal/update"
)

// The kernel tests boot the Debian kernel that scripts/kernel-lab.sh
// fetches under QEMU (TCG) with a busybox initramfs holding a static
// livesplice and the updates, and run every step of a case in one boot.

// vmTimeout bounds one VM run: TCG on a shared 2-core machine is slow.
const vmTimeout = 10 * time.Minute

func kernelLab(t *testing.T) *kernellab.Lab {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs the kernel lab and QEMU (make test sets them up)")
	}
	if os.Geteuid() != 0 {
		t.Skip("the kernel lab needs root (apt-get, dpkg)")
	}
	lab, err := kernellab.Setup("..")
	if err != nil {
		t.Fatal(err)
	}
	return lab
}

// staticLivesplice builds the binary for the VM: no C library there.
func staticLivesplice(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "livesplice")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/livesplice")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build static livesplice: %v\n%s", err, out)
	}
	return bin
}

// writeUpdate encodes f into dir and returns the file's path.
func writeUpdate(t *testing.T, dir string, f *update.File) string {
	t.Helper()
	data, err := update.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, f.ID+".lsu")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// sampleUpdate wraps a livepatch module replacing cmdline_proc_show into a
// kernel update whose pre code is pre (with its symbols).
func sampleUpdate(t *testing.T, lab *kernellab.Lab, id, module, ko string, pre *update.Code, syms []update.Symbol) *update.File {
	t.Helper()
	data, err := os.ReadFile(ko)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	self := len(syms)
	syms = append(syms, update.Symbol{Kind: update.SymLocal, Name: "cmdline_proc_show", File: "fs/proc/cmdline.c", Type: "func"})
	return &update.File{
		ID: id, Kind: update.KindKernel, Patch: hex.EncodeToString(sum[:]),
		Kernel: &update.Kernel{Release: lab.Release, ModuleName: module, Module: data},
		Targets: []update.Target{{
			Path: "vmlinux", Sections: []update.Section{}, Symbols: syms,
			Functions: []update.Function{{Name: "cmdline_proc_show", File: "fs/proc/cmdline.c", Status: update.StatusReplaced,
				Symbol: self, Section: -1, Size: uint64(len(pre.Data)), Pre: pre}},
		}},
	}
}

// TestKernelSampleLivepatch applies the kernel's own sample livepatch
// (samples/livepatch, built against the headers) through livesplice, with
// the pre code of cmdline_proc_show compiled from fs/proc/cmdline.c: run-pre
// matching against the running text, /proc/cmdline changed, show, a second
// update stacked on the first, undo in order, and an update whose pre code
// differs refused with nothing loaded.
func TestKernelSampleLivepatch(t *testing.T) {
	lab := kernelLab(t)
	work := t.TempDir()
	bin := staticLivesplice(t, work)

	// The sample module and a second one stacked on it.
	mod := filepath.Join(work, "mod")
	os.MkdirAll(mod, 0o755)
	sample, err := os.ReadFile(filepath.Join(lab.Src, "samples/livepatch/livepatch-sample.c"))
	if err != nil {
		t.Fatal(err)
	}
	second := bytes.ReplaceAll(sample, []byte("this has been live patched"), []byte("stacked on top of the sample"))
	busymod, err := os.ReadFile(filepath.Join(lab.Src, "samples/livepatch/livepatch-callbacks-busymod.c"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"livepatch-sample.c": sample, "livepatch-sample2.c": second,
		"livepatch-callbacks-busymod.c": busymod, "lp-busy.c": []byte(lpBusy),
		"Kbuild": []byte("obj-m := livepatch-sample.o livepatch-sample2.o livepatch-callbacks-busymod.o lp-busy.o\n")}
	for n, d := range files {
		if err := os.WriteFile(filepath.Join(mod, n), d, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// fs/proc/cmdline.c compiled on its own, as a module unit (the code of
	// cmdline_proc_show is the same as in vmlinux).
	unit := filepath.Join(work, "unit")
	os.MkdirAll(unit, 0o755)
	for _, n := range []string{"cmdline.c", "internal.h"} {
		d, err := os.ReadFile(filepath.Join(lab.Src, "fs/proc", n))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(unit, n), d, 0o644)
	}
	os.WriteFile(filepath.Join(unit, "Kbuild"), []byte("obj-m := cmdline.o\nccflags-y := -include linux/module.h\n"), 0o644)
	if err := lab.Make(mod, "modules"); err != nil {
		t.Fatal(err)
	}
	if err := lab.Make(unit, "cmdline.o"); err != nil {
		t.Fatal(err)
	}

	var syms1 []update.Symbol
	pre1, _, err := kernellab.FuncCode(filepath.Join(unit, "cmdline.o"), "cmdline_proc_show", "fs/proc/cmdline.c", &syms1)
	if err != nil {
		t.Fatal(err)
	}
	one := sampleUpdate(t, lab, "lp-one", "livepatch_sample", filepath.Join(mod, "livepatch-sample.ko"), pre1, syms1)

	// The same update with one immediate of the pre code changed
	// (`mov $0xa,%esi`: the '\n' seq_putc writes): built from other source.
	i := bytes.Index(pre1.Data, []byte{0xbe, 0x0a, 0, 0, 0})
	if i < 0 {
		t.Fatalf("cmdline_proc_show has no mov $0xa,%%esi: % x", pre1.Data)
	}
	badPre := &update.Code{Data: bytes.Clone(pre1.Data), Relocs: pre1.Relocs}
	badPre.Data[i+1] = 0x0b
	bad := sampleUpdate(t, lab, "lp-bad", "livepatch_sample", filepath.Join(mod, "livepatch-sample.ko"), badPre, syms1)

	// Stacked: built on a kernel with the sample applied, so its pre code
	// is the sample's replacement function.
	var syms2 []update.Symbol
	pre2, _, err := kernellab.FuncCode(filepath.Join(mod, "livepatch-sample.o"), "livepatch_cmdline_proc_show", "livepatch-sample.c", &syms2)
	if err != nil {
		t.Fatal(err)
	}
	two := sampleUpdate(t, lab, "lp-two", "livepatch_sample2", filepath.Join(mod, "livepatch-sample2.ko"), pre2, syms2)
	two.Requires = []string{"lp-one"}

	// A livepatch of a module function that a worker sleeps in: its
	// transition cannot finish.
	var syms3 []update.Symbol
	pre3, self3, err := kernellab.FuncCode(filepath.Join(mod, "livepatch-callbacks-busymod.o"), "busymod_work_func", "livepatch-callbacks-busymod.c", &syms3)
	if err != nil {
		t.Fatal(err)
	}
	ko3, err := os.ReadFile(filepath.Join(mod, "lp-busy.ko"))
	if err != nil {
		t.Fatal(err)
	}
	busy := &update.File{ID: "lp-busy", Kind: update.KindKernel, Patch: strings.Repeat("0", 64),
		Kernel: &update.Kernel{Release: lab.Release, ModuleName: "lp_busy", Module: ko3},
		Targets: []update.Target{{Path: "livepatch_callbacks_busymod", Sections: []update.Section{}, Symbols: syms3,
			Functions: []update.Function{{Name: "busymod_work_func", File: "livepatch-callbacks-busymod.c", Status: update.StatusReplaced,
				Symbol: self3, Section: -1, Size: uint64(len(pre3.Data)), Pre: pre3}},
		}},
	}

	initrd := filepath.Join(work, "initrd.cpio")
	err = kernellab.Initramfs(initrd, []kernellab.File{
		{Src: bin, Dst: "/livesplice"},
		{Src: writeUpdate(t, work, one), Dst: "/u/one.lsu"},
		{Src: writeUpdate(t, work, bad), Dst: "/u/bad.lsu"},
		{Src: writeUpdate(t, work, two), Dst: "/u/two.lsu"},
		{Src: writeUpdate(t, work, busy), Dst: "/u/busy.lsu"},
		{Src: filepath.Join(mod, "livepatch-callbacks-busymod.ko"), Dst: "/m/busymod.ko", Mode: 0o644},
	}, `
step cmdline0 cat /proc/cmdline
step bad /livesplice apply --kernel /u/bad.lsu
step after-bad sh -c 'ls /sys/kernel/livepatch; cat /proc/modules'
step apply1 /livesplice apply --kernel -v /u/one.lsu
step cmdline1 cat /proc/cmdline
step show1 /livesplice show --kernel
step apply2 /livesplice apply --kernel -v /u/two.lsu
step cmdline2 cat /proc/cmdline
step showjson /livesplice show --kernel --json
step undo-first /livesplice undo --kernel lp-one
step undo2 /livesplice undo --kernel lp-two
step cmdline3 cat /proc/cmdline
step undo1 /livesplice undo --kernel lp-one
step cmdline4 cat /proc/cmdline
step final sh -c 'ls /sys/kernel/livepatch; cat /proc/modules; /livesplice show --kernel'
step insmod insmod /m/busymod.ko sleep_secs=60
step settle sleep 2
step busy /livesplice apply --kernel --deadline 5s /u/busy.lsu
step after-busy sh -c 'ls /sys/kernel/livepatch; cut -d" " -f1 /proc/modules; /livesplice show --kernel'
step busy-bg sh -c '(/livesplice apply --kernel --deadline 300s /u/busy.lsu > /busy.out 2>&1; echo "rc=$?" >> /busy.out) & sleep 3'
step queued /livesplice apply --kernel -v --deadline 300s /u/one.lsu
step busy-done sh -c 'while ! grep -q rc= /busy.out; do sleep 1; done; cat /busy.out'
step queued-show /livesplice show --kernel
step queued-undo sh -c '/livesplice undo --kernel lp-one && /livesplice undo --kernel lp-busy && ls /sys/kernel/livepatch'
step lockdown sh -c 'mount -t securityfs none /sys/kernel/security && echo integrity > /sys/kernel/security/lockdown'
step locked /livesplice apply --kernel /u/one.lsu
step sigenforce sh -c 'echo 1 > /sys/module/module/parameters/sig_enforce'
step enforced /livesplice apply --kernel /u/one.lsu
step after-refusals sh -c 'ls /sys/kernel/livepatch; /livesplice show --kernel'
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

	const original = "console=ttyS0 panic=-1 quiet loglevel=3\n"
	expect := func(name string, rc int, out string) {
		t.Helper()
		s, ok := steps[name]
		if !ok {
			t.Errorf("step %s did not run", name)
			return
		}
		if s.RC != rc {
			t.Errorf("step %s: exit %d, want %d; output:\n%s", name, s.RC, rc, s.Out)
		}
		if out != "" && !strings.Contains(s.Out, out) {
			t.Errorf("step %s: output %q does not contain %q", name, s.Out, out)
		}
	}
	expect("cmdline0", 0, original)
	expect("bad", 3, "run-pre match cmdline_proc_show")
	if s := steps["after-bad"]; strings.TrimSpace(s.Out) != "" {
		t.Errorf("after a refused apply, livepatches or modules are loaded:\n%s", s.Out)
	}
	expect("apply1", 0, "run-pre matched cmdline_proc_show")
	expect("cmdline1", 0, "this has been live patched")
	expect("show1", 0, "lp-one\tenabled\tlivepatch_sample\t")
	expect("apply2", 0, "")
	expect("cmdline2", 0, "stacked on top of the sample")
	expect("showjson", 0, `"id": "lp-two"`)
	expect("undo-first", 6, "undo lp-two first")
	expect("undo2", 0, "")
	expect("cmdline3", 0, "this has been live patched")
	expect("undo1", 0, "")
	expect("cmdline4", 0, original)
	if s := steps["final"]; s.RC != 0 || strings.TrimSpace(s.Out) != "" {
		t.Errorf("after undo, something is left loaded or recorded:\n%s", s.Out)
	}
	expect("insmod", 0, "")
	// run-pre matched in the module, then the sleeping worker held the
	// transition past the deadline: reversed, the worker named.
	expect("busy", 4, "tasks not switched: ")
	if s := steps["busy"]; !strings.Contains(s.Out, "(kworker/") || !strings.Contains(s.Out, "reversed, nothing applied") {
		t.Errorf("busy: the message does not name the worker or the reversal:\n%s", s.Out)
	}
	if s := steps["after-busy"]; strings.TrimSpace(s.Out) != "livepatch_callbacks_busymod" {
		t.Errorf("after a reversed apply, more than the busy module is loaded or recorded:\n%s", s.Out)
	}
	// A second apply while the first waits for its transition (the worker
	// sleeps on): it waits for the first, saying what that one waits for,
	// and applies once the worker has woken and the first is done.
	expect("queued", 0, "waiting for another livesplice working on the kernel (livepatch lp_busy in transition, tasks not switched: ")
	if s := steps["queued"]; !strings.Contains(s.Out, "(kworker/") || !strings.Contains(s.Out, " in msleep<busymod_work_func") || !strings.Contains(s.Out, "run-pre matched cmdline_proc_show") {
		t.Errorf("queued: the wait does not name the worker and where it sleeps, or the apply did not follow:\n%s", s.Out)
	}
	expect("busy-done", 0, "rc=0")
	expect("queued-show", 0, "lp-one\tenabled")
	expect("queued-show", 0, "lp-busy\tenabled")
	if s := steps["queued-undo"]; s.RC != 0 || strings.TrimSpace(s.Out) != "" {
		t.Errorf("queued-undo: exit %d, left:\n%s", s.RC, s.Out)
	}
	// Unsigned modules: refused under lockdown, then with sig_enforce (both
	// can only be raised at run time), each explained, nothing loaded.
	expect("lockdown", 0, "")
	expect("locked", 7, "lockdown")
	expect("sigenforce", 0, "")
	expect("enforced", 7, "module.sig_enforce=1")
	if s := steps["after-refusals"]; s.RC != 0 || strings.TrimSpace(s.Out) != "" {
		t.Errorf("after refused loads, something is loaded or recorded:\n%s", s.Out)
	}
}

// TestKernelCreateApply is the whole kernel workflow: create --kernel builds
// updates from patches to fs/proc/cmdline.c on the host (a prepared tree,
// one unit compiled pre and post, a livepatch module), and in the VM apply
// changes /proc/cmdline, show lists it, undo restores it. The second
// update (a new function, a new global, a static local that keeps its state
// across reads) is built on the original source, so it is refused while
// the first one replaces the function, and applies once that is undone.
// In the same boot: an update built on a tree with the first patch in it
// (create --src on that tree, --requires the first) stacks on the first;
// livesplice.h's hooks and shadow variables in a kernel update (livepatch
// callbacks, klp_shadow_*); a vetoing PRE_APPLY hook, nothing loaded. On
// the host: a hook livepatch cannot run (CHECK_APPLY) refused at create.
func TestKernelCreateApply(t *testing.T) {
	lab := kernelLab(t)
	work := t.TempDir()
	bin := staticLivesplice(t, work)
	createFrom := func(src, id, patch string, extra ...string) (string, []byte, error) {
		t.Helper()
		lsu := filepath.Join(work, id+".lsu")
		abs, err := filepath.Abs(filepath.Join("testdata/kernel", patch))
		if err != nil {
			t.Fatal(err)
		}
		args := append([]string{"create", "--kernel", "--src", src, "--config", lab.Config,
			"--headers", lab.Headers, "--id", id, "-o", lsu}, extra...)
		out, err := exec.Command(livesplice, append(args, abs)...).CombinedOutput()
		return lsu, out, err
	}
	create := func(src, id, patch string, extra ...string) string {
		t.Helper()
		lsu, out, err := createFrom(src, id, patch, extra...)
		if err != nil {
			t.Fatalf("create --kernel %s: %v\n%s", patch, err, out)
		}
		f, err := update.ReadFile(lsu)
		if err != nil {
			t.Fatal(err)
		}
		if f.Kind != update.KindKernel || f.Kernel.Release != lab.Release {
			t.Fatalf("create made a %s update for %q, want kernel for %s", f.Kind, f.Kernel.Release, lab.Release)
		}
		return lsu
	}
	fix := create(lab.Src, "cmdline-fix", "cmdline.patch")
	counter := create(lab.Src, "counter", "counter.patch")
	// The copy differs from the source in one .c file: create reuses the
	// source's prepared tree instead of preparing one for the copy.
	trees := func() []string {
		m, _ := filepath.Glob(filepath.Join(kbuild.CacheRoot(), "kbuild", "*", ".livesplice-prepared"))
		return m
	}
	before := trees()
	stacked := create(stackedTree(t, lab.Src, "cmdline.patch"), "stacked", "stacked.patch", "--requires", "cmdline-fix")
	if after := trees(); !slices.Equal(before, after) {
		t.Errorf("the stacked create prepared another kernel tree: %v, before %v", after, before)
	}
	shadow := create(lab.Src, "shadow", "shadow.patch")
	veto := create(lab.Src, "veto", "veto.patch")
	_, out, err := createFrom(lab.Src, "check", "check-apply.patch")
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	if code != 5 || !strings.Contains(string(out), "cmdline_check: LIVESPLICE_CHECK_APPLY hook: livepatch has no point") {
		t.Errorf("create with a CHECK_APPLY hook: exit %d, want 5 naming the hook; output:\n%s", code, out)
	}
	initrd := filepath.Join(work, "initrd.cpio")
	err = kernellab.Initramfs(initrd, []kernellab.File{
		{Src: bin, Dst: "/livesplice"},
		{Src: fix, Dst: "/u/cmdline.lsu"},
		{Src: counter, Dst: "/u/counter.lsu"},
		{Src: stacked, Dst: "/u/stacked.lsu"},
		{Src: shadow, Dst: "/u/shadow.lsu"},
		{Src: veto, Dst: "/u/veto.lsu"},
	}, `
step cmdline0 cat /proc/cmdline
step apply /livesplice apply --kernel /u/cmdline.lsu
step again /livesplice apply --kernel /u/cmdline.lsu
step cmdline1 cat /proc/cmdline
step show /livesplice show --kernel
step counter-over /livesplice apply --kernel /u/counter.lsu
step loaded sh -c 'ls /sys/kernel/livepatch | wc -l'
step undo /livesplice undo --kernel cmdline-fix
step cmdline2 cat /proc/cmdline
step undo-again /livesplice undo --kernel cmdline-fix
step counter /livesplice apply --kernel /u/counter.lsu
step read1 cat /proc/cmdline
step read2 cat /proc/cmdline
step counter-undo /livesplice undo --kernel counter
step cmdline3 cat /proc/cmdline
step final sh -c 'ls /sys/kernel/livepatch; cat /proc/modules; /livesplice show --kernel'
step stacked-alone /livesplice apply --kernel /u/stacked.lsu
step stack-fix /livesplice apply --kernel /u/cmdline.lsu
step stack-apply /livesplice apply --kernel /u/stacked.lsu
step stack-read cat /proc/cmdline
step stack-undo-first /livesplice undo --kernel cmdline-fix
step stack-undo2 /livesplice undo --kernel stacked
step stack-read1 cat /proc/cmdline
step stack-undo1 /livesplice undo --kernel cmdline-fix
step stack-read0 cat /proc/cmdline
step shadow-apply /livesplice apply --kernel /u/shadow.lsu
step shadow-read1 cat /proc/cmdline
step shadow-read2 cat /proc/cmdline
step shadow-undo /livesplice undo --kernel shadow
step shadow-read0 cat /proc/cmdline
step shadow-again /livesplice apply --kernel /u/shadow.lsu
step shadow-read3 cat /proc/cmdline
step shadow-undo2 /livesplice undo --kernel shadow
step shadow-log sh -c 'dmesg | grep -o "livesplice-test: .*"'
step veto /livesplice apply --kernel /u/veto.lsu
step veto-read cat /proc/cmdline
step veto-log sh -c 'dmesg | grep -o "livesplice-test: .*" | tail -n 2'
step veto-final sh -c 'ls /sys/kernel/livepatch; cat /proc/modules; /livesplice show --kernel'
`)
	if err != nil {
		t.Fatal(err)
	}
	console, err := kernellab.Boot(lab.Vmlinuz, initrd, vmTimeout)
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, console)
	}
	steps := kernellab.ParseSteps(console)
	const original = "console=ttyS0 panic=-1 quiet loglevel=3\n"
	const shadowLog = `livesplice-test: pre_apply
livesplice-test: post_apply generation 7
livesplice-test: pre_undo after 2 reads
livesplice-test: post_undo freed the shadows
livesplice-test: pre_apply
livesplice-test: post_apply generation 7
livesplice-test: pre_undo after 1 reads
livesplice-test: post_undo freed the shadows
`
	checkSteps(t, steps, []stepWant{
		{"cmdline0", 0, original},
		{"apply", 0, ""},
		{"again", 6, "already applied"},
		{"cmdline1", 0, "loglevel=3 (spliced by livesplice)\n"},
		{"show", 0, "cmdline-fix\tenabled\t"},
		{"counter-over", 3, "run-pre match cmdline_proc_show"},
		{"loaded", 0, "1\n"},
		{"undo", 0, ""},
		{"cmdline2", 0, original},
		{"undo-again", 6, "not applied"},
		{"counter", 0, ""},
		{"read1", 0, "loglevel=3 (read 1/1)\n"},
		{"read2", 0, "loglevel=3 (read 2/2)\n"},
		{"counter-undo", 0, ""},
		{"cmdline3", 0, original},
		{"final", 0, ""},
		// Stacked: built on the tree with the fix in it, requires it.
		{"stacked-alone", 6, "cmdline-fix"},
		{"stack-fix", 0, ""},
		{"stack-apply", 0, ""},
		{"stack-read", 0, "loglevel=3 (spliced twice)\n"},
		{"stack-undo-first", 6, "undo stacked first"},
		{"stack-undo2", 0, ""},
		{"stack-read1", 0, "loglevel=3 (spliced by livesplice)\n"},
		{"stack-undo1", 0, ""},
		{"stack-read0", 0, original},
		// livesplice.h in the kernel: the shadow counts reads of the
		// existing command line, PRE_APPLY set the generation, POST_UNDO
		// freed the shadows (the count starts again).
		{"shadow-apply", 0, ""},
		{"shadow-read1", 0, "loglevel=3 (shadow reads 1, generation 7)\n"},
		{"shadow-read2", 0, "loglevel=3 (shadow reads 2, generation 7)\n"},
		{"shadow-undo", 0, ""},
		{"shadow-read0", 0, original},
		{"shadow-again", 0, ""},
		{"shadow-read3", 0, "loglevel=3 (shadow reads 1, generation 7)\n"},
		{"shadow-undo2", 0, ""},
		{"shadow-log", 0, shadowLog},
		// A vetoing PRE_APPLY: exit 8, FAIL_APPLY ran, nothing loaded.
		{"veto", 8, "pre_apply hook cmdline_not_now vetoed the update (returned 1); nothing was loaded"},
		{"veto-read", 0, original},
		{"veto-log", 0, "livesplice-test: veto\nlivesplice-test: fail_apply after the veto\n"},
		{"veto-final", 0, ""},
	})
	if t.Failed() {
		t.Logf("console:\n%s", console)
	}
}

// stackedTree returns a copy of the kernel source src with a patch of
// testdata/kernel applied: hard links (cp -al, cheap), which patch replaces
// by new files for the ones it changes, so src is never written.
func stackedTree(t *testing.T, src, patch string) string {
	t.Helper()
	tree := filepath.Join(t.TempDir(), "linux")
	if out, err := exec.Command("cp", "-al", src, tree).CombinedOutput(); err != nil {
		// Another file system: a full copy that keeps the times.
		os.RemoveAll(tree)
		if out2, err := exec.Command("cp", "-a", src, tree).CombinedOutput(); err != nil {
			t.Fatalf("copy %s: %v\n%s%s", src, err, out, out2)
		}
	}
	abs, err := filepath.Abs(filepath.Join("testdata/kernel", patch))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("patch", "-p1", "--batch", "--silent", "-i", abs)
	cmd.Dir = tree
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("patch %s: %v\n%s", tree, err, out)
	}
	return tree
}

// lpBusy is a livepatch replacing busymod_work_func of the kernel's sample
// module livepatch-callbacks-busymod.
const lpBusy = `#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>
#include <linux/workqueue.h>

static void lp_busymod_work_func(struct work_struct *work)
{
	pr_info("busymod_work_func replaced\n");
}

static struct klp_func funcs[] = {
	{ .old_name = "busymod_work_func", .new_func = lp_busymod_work_func, },
	{ }
};

static struct klp_object objs[] = {
	{ .name = "livepatch_callbacks_busymod", .funcs = funcs, },
	{ }
};

static struct klp_patch patch = { .mod = THIS_MODULE, .objs = objs, };

static int lp_busy_init(void) { return klp_enable_patch(&patch); }
static void lp_busy_exit(void) { }
module_init(lp_busy_init);
module_exit(lp_busy_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
`
