// Package kernellab is the kernel tests' lab: the Debian kernel fetched by
// scripts/kernel-lab.sh, modules built against its headers, functions taken
// out of compiled kernel units, and a QEMU virtual machine that boots the
// kernel with a busybox initramfs, runs a shell script of steps and reports
// each step's output and exit status on the serial console.
package kernellab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"livesplice/internal/build"
)

// Lab is where scripts/kernel-lab.sh put the kernel.
type Lab struct {
	Dir        string // $LIVESPLICE_LAB
	Release    string // uname -r of the kernel, e.g. 6.1.0-56-amd64
	PkgVersion string // Debian version of its packages
	Vmlinuz    string // the kernel image
	Config     string // its config
	Modules    string // lib/modules/RELEASE
	Headers    string // linux-headers-RELEASE (kbuild works with make -C)
	Src        string // the unpacked linux-source tree
}

// Setup runs scripts/kernel-lab.sh of the repository at root (installing
// and downloading what is missing) and returns the paths it prints.
func Setup(root string) (*Lab, error) {
	cmd := exec.Command(filepath.Join(root, "scripts", "kernel-lab.sh"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("scripts/kernel-lab.sh: %v: %s", err, build.LastLines(errb.String(), 10))
	}
	kv := map[string]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = v
		}
	}
	l := &Lab{Dir: kv["LAB"], Release: kv["RELEASE"], PkgVersion: kv["PKGVERSION"], Vmlinuz: kv["VMLINUZ"],
		Config: kv["CONFIG"], Modules: kv["MODULES"], Headers: kv["HEADERS"], Src: kv["SRC"]}
	for _, p := range []string{l.Vmlinuz, l.Config, l.Headers, l.Src} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("scripts/kernel-lab.sh did not provide %q: %v", p, err)
		}
	}
	return l, nil
}

// Make runs kbuild for an external module directory against the headers:
// make -C HEADERS M=dir TARGETS, with -ffunction-sections so that every
// function has its own section.
func (l *Lab) Make(dir string, targets ...string) error {
	args := append([]string{"-C", l.Headers, "M=" + dir, "KCFLAGS=-ffunction-sections -fdata-sections"}, targets...)
	cmd := exec.Command("make", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("make %s in %s: %v: %s", strings.Join(targets, " "), dir, err, build.LastLines(string(out), 15))
	}
	return nil
}

// File is one file to put into the initramfs.
type File struct {
	Src  string      // host path (or empty with Data)
	Data []byte      // contents, when Src is empty
	Dst  string      // path in the VM, absolute
	Mode os.FileMode // 0: 0755 for Src files, 0644 for Data
}

// initScript mounts the pseudo file systems, runs /test.sh and powers off.
const initScript = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /run /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "@@LS-BOOTED $(uname -r)"
sh /test.sh
echo "@@LS-DONE"
poweroff -f
`

// stepsPrelude defines step NAME CMD...: runs CMD and frames its output and
// exit status for ParseSteps.
const stepsPrelude = `step() { n=$1; shift; echo "@@LS-BEGIN $n"; "$@" 2>&1; echo "@@LS-END $n rc=$?"; }
`

// Initramfs writes an uncompressed newc cpio archive to out with busybox,
// the files, and an /init that runs script (which may use `step`).
func Initramfs(out string, files []File, script string) error {
	stage, err := os.MkdirTemp("", "kernellab-initramfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return fmt.Errorf("busybox (package busybox-static) is not installed: %w", err)
	}
	all := append([]File{
		{Src: bb, Dst: "/bin/busybox"},
		{Data: []byte(initScript), Dst: "/init", Mode: 0o755},
		{Data: []byte(stepsPrelude + script), Dst: "/test.sh", Mode: 0o755},
	}, files...)
	for _, f := range all {
		dst := filepath.Join(stage, f.Dst)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		data, mode := f.Data, f.Mode
		if f.Src != "" {
			if data, err = os.ReadFile(f.Src); err != nil {
				return err
			}
			if mode == 0 {
				mode = 0o755
			}
		} else if mode == 0 {
			mode = 0o644
		}
		if err := os.WriteFile(dst, data, mode); err != nil {
			return err
		}
	}
	cmd := exec.Command("sh", "-c", "find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 > "+shellQuote(out))
	cmd.Dir = stage
	if o, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cpio: %v: %s", err, o)
	}
	return nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// Boot runs the kernel with the initramfs under QEMU (TCG: KVM does not work
// on these machines) until the VM powers off, and returns the console.
// timeout bounds the whole run.
func Boot(vmlinuz, initrd string, timeout time.Duration) (string, error) {
	return BootWith(vmlinuz, initrd, timeout, VM{})
}

// VM varies the machine a test boots.
type VM struct {
	CPU    string // QEMU -cpu model; "max" when empty
	Append string // more kernel command line
	Disk   string // a raw disk image attached as virtio (/dev/vda), if any
}

// BootWith is Boot on the machine vm describes.
func BootWith(vmlinuz, initrd string, timeout time.Duration, vm VM) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cpu := vm.CPU
	if cpu == "" {
		cpu = "max"
	}
	args := []string{"-accel", "tcg,thread=multi", "-cpu", cpu, "-m", "1024", "-smp", "2",
		"-nographic", "-no-reboot", "-monitor", "none",
		"-kernel", vmlinuz, "-initrd", initrd,
		"-append", strings.TrimSpace("console=ttyS0 panic=-1 quiet loglevel=3 " + vm.Append)}
	if vm.Disk != "" {
		args = append(args, "-drive", "file="+vm.Disk+",format=raw,if=virtio")
	}
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	console := strings.ReplaceAll(out.String(), "\r", "")
	if ctx.Err() != nil {
		return console, fmt.Errorf("VM did not power off within %v", timeout)
	}
	if err != nil {
		return console, fmt.Errorf("qemu: %w", err)
	}
	if !strings.Contains(console, "@@LS-DONE") {
		return console, errors.New("VM stopped before its script finished")
	}
	return console, nil
}

// Step is what one step of the script printed and its exit status.
type Step struct {
	Out string
	RC  int
}

// ParseSteps reads the framed steps from the console.
func ParseSteps(console string) map[string]Step {
	steps := map[string]Step{}
	var cur string
	var buf strings.Builder
	in := false
	sc := bufio.NewScanner(strings.NewReader(console))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if n, ok := strings.CutPrefix(line, "@@LS-BEGIN "); ok {
			cur, in = n, true
			buf.Reset()
			continue
		}
		if rest, ok := strings.CutPrefix(line, "@@LS-END "); ok && in {
			n, rc, _ := strings.Cut(rest, " rc=")
			if n == cur {
				code, err := strconv.Atoi(rc)
				if err != nil {
					code = -1
				}
				steps[cur] = Step{Out: buf.String(), RC: code}
			}
			in = false
			continue
		}
		if in {
			buf.WriteString(line)
			buf.WriteByte('\n')
		}
	}
	return steps
}
