package e2e

import (
	"io/fs"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"livesplice/e2e/kernellab"
)

// TestKernelStreamRevoke: the stream's agent on a real kernel (QEMU). A
// kernel update made with create --kernel is published; `upgrade --kernel`
// in the VM, against the repository served there by `livesplice serve`,
// applies it; the publisher removes it from the stream (`repo remove`),
// and the next `upgrade --kernel` undoes it in the kernel: a revoked update
// never stays applied.
func TestKernelStreamRevoke(t *testing.T) {
	lab := kernelLab(t)
	work := t.TempDir()
	bin := staticLivesplice(t, work)
	lsu := filepath.Join(work, "cmdline-fix.lsu")
	patch, err := filepath.Abs("testdata/kernel/cmdline.patch")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(livesplice, "create", "--kernel", "--src", lab.Src, "--config", lab.Config,
		"--headers", lab.Headers, "--id", "cmdline-fix", "-o", lsu, patch).CombinedOutput(); err != nil {
		t.Fatalf("create --kernel: %v\n%s", err, out)
	}
	repoDir := filepath.Join(work, "repo")
	mustRun(t, "repo", "init", repoDir)
	mustRun(t, "repo", "add", repoDir, lsu)

	// The whole repository (keys too: the VM's publisher removes the
	// update) goes into the VM under /r.
	files := []kernellab.File{{Src: bin, Dst: "/livesplice"}}
	err = filepath.WalkDir(repoDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(repoDir, p)
		files = append(files, kernellab.File{Src: p, Dst: "/r/" + rel, Mode: 0o600})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	const up = "/livesplice upgrade --kernel --repo http://127.0.0.1:8470 --trust /r/root.json --state /s"
	initrd := filepath.Join(work, "initrd.cpio")
	err = kernellab.Initramfs(initrd, files, `
step lo ifconfig lo 127.0.0.1 up
step serve sh -c '/livesplice serve /r --no-fleet >/dev/null 2>&1 & for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O /dev/null http://127.0.0.1:8470/root.json 2>/dev/null && exit 0; sleep 1; done; exit 1'
step cmdline0 cat /proc/cmdline
step up1 `+up+`
step cmdline1 cat /proc/cmdline
step show1 /livesplice show --kernel
step remove /livesplice repo remove /r cmdline-fix
step up2 `+up+`
step cmdline2 cat /proc/cmdline
step show2 sh -c '/livesplice show --kernel; ls /sys/kernel/livepatch'
step up3 `+up+`
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
	checkSteps(t, steps, []stepWant{
		{"serve", 0, ""},
		{"cmdline0", 0, original},
		{"up1", 0, "applied 1, already applied 0, failed 0"},
		{"cmdline1", 0, "loglevel=3 (spliced by livesplice)\n"},
		{"show1", 0, "cmdline-fix\tenabled\t"},
		{"remove", 0, ""},
		{"up2", 0, "applied 0, already applied 0, failed 0, undone 1"},
		{"cmdline2", 0, original},
		{"show2", 0, ""},
		{"up3", 0, "applied 0, already applied 0, failed 0"},
	})
	if s := steps["up3"]; strings.Contains(s.Out, "undone") {
		t.Errorf("a third upgrade undid again: %q", s.Out)
	}
	if t.Failed() {
		t.Logf("console:\n%s", console)
	}
}
