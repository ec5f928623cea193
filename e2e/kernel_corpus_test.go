package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"livesplice/e2e/kernellab"
)

// TestKernelKpatchSuite measures livesplice on kpatch's integration suite
// for Linux 6.2 (test/integration/linux-6.2.0 of github.com/dynup/kpatch;
// its patches apply to Debian's 6.1 source). Not part of make test: run it
// with the directory of the suite's files,
//
//	git --git-dir=KPATCH.git archive HEAD test/integration/linux-6.2.0 | tar -x -C /tmp/kp
//	LIVESPLICE_KPATCH_SUITE=/tmp/kp/test/integration/linux-6.2.0 go test -count=1 -v -run TestKernelKpatchSuite ./e2e/
//
// For each NAME.patch it creates the update from the Debian source
// (made), applies it in one VM boot (applied), runs NAME-LOADED.test there
// if the suite has one (check; without one, the check is a clean undo),
// and undoes it. A NAME-FAIL.patch must be refused, at create or at apply.
// It prints one table row per patch; it fails only when the harness does.
func TestKernelKpatchSuite(t *testing.T) {
	dir := os.Getenv("LIVESPLICE_KPATCH_SUITE")
	if dir == "" {
		t.Skip("set LIVESPLICE_KPATCH_SUITE to kpatch's test/integration/linux-6.2.0 directory")
	}
	lab := kernelLab(t)
	work := t.TempDir()
	bin := staticLivesplice(t, work)
	patches, err := filepath.Glob(filepath.Join(dir, "*.patch"))
	if err != nil || len(patches) == 0 {
		t.Fatalf("no *.patch in %s", dir)
	}
	sort.Strings(patches)
	type row struct {
		name, made, applied, check, reason string
		fail                               bool
	}
	var rows []*row
	files := []kernellab.File{{Src: bin, Dst: "/livesplice"},
		{Data: []byte("#!/bin/sh\nexec \"$@\"\n"), Dst: "/bin/sudo", Mode: 0o755}}
	script := "step setup sh -c 'mkdir -p /sbin && ln -sf /bin/modprobe /sbin/modprobe && mount -t debugfs none /sys/kernel/debug && insmod /m/crc32c_generic.ko'\n"
	for _, p := range patches {
		name := strings.TrimSuffix(filepath.Base(p), ".patch")
		r := &row{name: name, fail: strings.HasSuffix(name, "-FAIL")}
		rows = append(rows, r)
		lsu := filepath.Join(work, name+".lsu")
		out, err := exec.Command(livesplice, "create", "--kernel", "--src", lab.Src, "--config", lab.Config,
			"--headers", lab.Headers, "--id", name, "-o", lsu, p).CombinedOutput()
		t.Logf("create %s: %v\n%s", name, err, tail(string(out), 8))
		if err != nil {
			r.made = "no"
			r.reason = tail(string(out), 1)
			continue
		}
		r.made = "yes"
		files = append(files, kernellab.File{Src: lsu, Dst: "/u/" + name + ".lsu"})
		// On a refusal, the kernel's reason too (the console shows no kernel log).
		script += fmt.Sprintf("step apply-%s sh -c '/livesplice apply --kernel -v --deadline 120s /u/%s.lsu || { rc=$?; dmesg | tail -4; exit $rc; }'\n", name, name)
		if test := filepath.Join(dir, name+"-LOADED.test"); fileExists(test) {
			files = append(files, kernellab.File{Src: test, Dst: "/t/" + name + "-LOADED.test"})
			script += fmt.Sprintf("step check-%s sh /t/%s-LOADED.test\n", name, name)
		}
		script += fmt.Sprintf("step undo-%s /livesplice undo --kernel --deadline 120s %s\n", name, name)
		script += fmt.Sprintf("step left-%s sh -c 'ls /sys/kernel/livepatch; /livesplice show --kernel'\n", name)
	}
	// module.patch's test loads xfs, which needs libcrc32c and crc32c.
	mods := filepath.Join(work, "modroot")
	rel := filepath.Base(lab.Modules)
	for _, m := range []string{"kernel/fs/xfs/xfs.ko", "kernel/lib/libcrc32c.ko", "kernel/crypto/crc32c_generic.ko"} {
		dst := filepath.Join(mods, "lib/modules", rel, m)
		os.MkdirAll(filepath.Dir(dst), 0o755)
		if out, err := exec.Command("cp", filepath.Join(lab.Modules, m), dst).CombinedOutput(); err != nil {
			t.Fatalf("cp %s: %v\n%s", m, err, out)
		}
		files = append(files, kernellab.File{Src: dst, Dst: "/lib/modules/" + rel + "/" + m, Mode: 0o644})
	}
	if out, err := exec.Command("depmod", "-b", mods, rel).CombinedOutput(); err != nil {
		t.Fatalf("depmod: %v\n%s", err, out)
	}
	for _, f := range []string{"modules.dep", "modules.alias", "modules.symbols"} {
		files = append(files, kernellab.File{Src: filepath.Join(mods, "lib/modules", rel, f), Dst: "/lib/modules/" + rel + "/" + f, Mode: 0o644})
	}
	files = append(files, kernellab.File{Src: filepath.Join(lab.Modules, "kernel/crypto/crc32c_generic.ko"), Dst: "/m/crc32c_generic.ko", Mode: 0o644})

	initrd := filepath.Join(work, "initrd.cpio")
	if err := kernellab.Initramfs(initrd, files, script); err != nil {
		t.Fatal(err)
	}
	console, err := kernellab.Boot(lab.Vmlinuz, initrd, vmTimeout)
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, console)
	}
	t.Logf("console:\n%s", console)
	steps := kernellab.ParseSteps(console)
	made, applied, checked := 0, 0, 0
	for _, r := range rows {
		if r.made == "yes" {
			a := steps["apply-"+r.name]
			switch {
			case a.RC == 0:
				r.applied = "yes"
			default:
				r.applied = "no"
				r.reason = tail(a.Out, 3)
			}
			if r.applied == "yes" {
				c, has := steps["check-"+r.name]
				u := steps["undo-"+r.name]
				switch {
				case has && c.RC == 0 && u.RC == 0:
					r.check = "yes"
				case !has && u.RC == 0:
					r.check = "yes (undo)"
				case has && c.RC != 0:
					r.check = "no"
					r.reason = "LOADED test failed: " + tail(c.Out, 2)
				default:
					r.check = "no"
					r.reason = "undo: " + tail(u.Out, 1)
				}
			}
		}
		// A -FAIL patch scores by being refused.
		if r.fail {
			refused := r.made == "no" || r.applied == "no"
			for _, c := range []*string{&r.made, &r.applied, &r.check} {
				if refused {
					*c = "refused"
				} else if *c == "" || strings.HasPrefix(*c, "yes") {
					*c = "NOT refused"
				}
			}
		}
		if r.made == "yes" || r.made == "refused" {
			made++
		}
		if r.applied == "yes" || r.applied == "refused" {
			applied++
		}
		if strings.HasPrefix(r.check, "yes") || r.check == "refused" {
			checked++
		}
	}
	var b strings.Builder
	b.WriteString("| patch | made | applied | check | reason |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r.name, r.made, orDash(r.applied), orDash(r.check), strings.ReplaceAll(r.reason, "|", "\\|"))
	}
	fmt.Fprintf(&b, "\n%d/%d made, %d/%d applied, %d/%d checked: %d of %d\n", made, len(rows), applied, len(rows), checked, len(rows), made+applied+checked, 3*len(rows))
	t.Logf("kpatch suite:\n%s", b.String())
	os.WriteFile(filepath.Join(os.TempDir(), "livesplice-kpatch-suite.md"), []byte(b.String()), 0o644)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// tail returns the last n non-empty lines of s, joined by " / ".
func tail(s string, n int) string {
	var ls []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			ls = append(ls, l)
		}
	}
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, " / ")
}
