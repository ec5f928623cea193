package kernel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// patchDir is /sys/kernel/livepatch/<name>.
func (h *Host) patchDir(name string) string {
	return filepath.Join(h.Sys, "kernel", "livepatch", name)
}

// readFlag reads a 0/1 sysfs file of a patch.
func (h *Host) readFlag(name, file string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(h.patchDir(name), file))
	if err != nil {
		return false, err
	}
	v := strings.TrimSpace(string(b))
	return v == "1", nil
}

func (h *Host) writeFlag(name, file, v string) error {
	return os.WriteFile(filepath.Join(h.patchDir(name), file), []byte(v), 0)
}

// patchLoaded reports whether a livepatch called name exists.
func (h *Host) patchLoaded(name string) bool {
	_, err := os.Stat(h.patchDir(name))
	return err == nil
}

// patchFuncs lists the functions a loaded livepatch replaces, from its
// sysfs tree (<patch>/<object>/<function,sympos>).
func (h *Host) patchFuncs(name string) []PatchedFunc {
	var out []PatchedFunc
	objs, _ := os.ReadDir(h.patchDir(name))
	for _, o := range objs {
		if !o.IsDir() {
			continue
		}
		fns, _ := os.ReadDir(filepath.Join(h.patchDir(name), o.Name()))
		for _, f := range fns {
			fn, pos, ok := strings.Cut(f.Name(), ",")
			if !f.IsDir() || !ok {
				continue
			}
			n, _ := strconv.Atoi(pos)
			out = append(out, PatchedFunc{Object: o.Name(), Name: fn, Sympos: n})
		}
	}
	return out
}

// waitTransition follows /sys/kernel/livepatch/<name>/transition until it
// reads 0. Tasks that stay behind are signalled (livepatch's fake signal,
// which makes a sleeping task switch at its return to user space) after a
// second and again every 3 s, when o.Log also hears which tasks are left
// and where they sleep (as kpatch reports them). It returns ErrBusy naming
// those tasks if the deadline passes first; a loaded machine only makes it
// wait longer.
func (h *Host) waitTransition(name string, deadline time.Duration, patching bool, o Options) error {
	start := time.Now()
	nextSignal := time.Second
	for {
		tr, err := h.readFlag(name, "transition")
		if err != nil {
			if (errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV)) && !patching {
				return nil // a disabled patch is freed at the end of its transition
			}
			return fmt.Errorf("livepatch %s: %w", name, err)
		}
		if !tr {
			return nil
		}
		el := time.Since(start)
		if el >= deadline {
			return fmt.Errorf("livepatch %s: transition not finished after %v; tasks not switched: %s: %w",
				name, deadline.Round(time.Second), h.stragglers(patching), ErrBusy)
		}
		if el >= nextSignal {
			_ = h.writeFlag(name, "signal", "1") // best effort: absent on old kernels
			o.Logf("livepatch %s: transition running for %v; signalled the tasks not switched: %s", name, el.Round(time.Second), h.stragglers(patching))
			nextSignal += 3 * time.Second
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// transitions describes the livepatch transitions now running: each patch
// and the tasks it waits for.
func (h *Host) transitions() string {
	ents, _ := os.ReadDir(filepath.Join(h.Sys, "kernel", "livepatch"))
	var out []string
	for _, e := range ents {
		tr, err := h.readFlag(e.Name(), "transition")
		if err != nil || !tr {
			continue
		}
		en, _ := h.readFlag(e.Name(), "enabled")
		out = append(out, fmt.Sprintf("livepatch %s in transition, tasks not switched: %s", e.Name(), h.stragglers(en)))
	}
	if len(out) == 0 {
		return "no livepatch transition running"
	}
	return strings.Join(out, "; ")
}

// loadWaiting loads the module; while another livepatch's transition runs
// (the kernel refuses a new patch then: EBUSY) it waits for it, reporting
// its tasks with o.Log, up to the deadline.
func (h *Host) loadWaiting(ko []byte, mod string, o Options) error {
	start, next := time.Now(), time.Duration(0)
	for {
		err := loadModule(ko, mod)
		if err == nil || !errors.Is(err, ErrBusy) {
			return err
		}
		el := time.Since(start)
		if el >= o.DeadlineOr(DefaultDeadline) {
			return fmt.Errorf("%w, still after %v (%s)", err, o.DeadlineOr(DefaultDeadline).Round(time.Second), h.transitions())
		}
		if el >= next {
			o.Logf("waiting for another livepatch transition (%s)", h.transitions())
			next += 3 * time.Second
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stragglers names the tasks whose patch_state is not yet the target state
// of the transition (1 when patching, 0 when unpatching), each with where
// it sleeps (its kernel stack's first frames outside the scheduler).
func (h *Host) stragglers(patching bool) string {
	want := "1"
	if !patching {
		want = "0"
	}
	var names []string
	paths, _ := filepath.Glob(filepath.Join(h.Proc, "[0-9]*", "task", "[0-9]*", "patch_state"))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if st := strings.TrimSpace(string(b)); st == want || st == "-1" {
			continue
		}
		tdir := filepath.Dir(p)
		comm, _ := os.ReadFile(filepath.Join(tdir, "comm"))
		n := fmt.Sprintf("%s(%s)", filepath.Base(tdir), strings.TrimSpace(string(comm)))
		if where := sleepsIn(filepath.Join(tdir, "stack")); where != "" {
			n += " in " + where
		}
		names = append(names, n)
		if len(names) == 20 {
			names = append(names, "...")
			break
		}
	}
	if len(names) == 0 {
		return "none found"
	}
	return strings.Join(names, ", ")
}

// sleepsIn reads a task's kernel stack (/proc/PID/task/TID/stack: lines
// "[<0>] func+0x1a/0x30") and returns its first three functions outside the
// scheduler, innermost first ("msleep<busymod_work_func<process_one_work").
func sleepsIn(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var fns []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		fn, _, _ := strings.Cut(f[1], "+")
		if strings.Contains(fn, "schedule") || strings.HasPrefix(fn, "__switch_to") || fn == "" {
			continue
		}
		fns = append(fns, fn)
		if len(fns) == 3 {
			break
		}
	}
	return strings.Join(fns, "<")
}

// loadModule loads a module image, explaining the refusals users meet.
func loadModule(ko []byte, modName string) error {
	err := unix.InitModule(ko, "")
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EKEYREJECTED), errors.Is(err, unix.ENOKEY):
		return fmt.Errorf("load livepatch module: %v: the kernel only loads signed modules (module.sig_enforce=1): sign the module with a key the kernel trusts (scripts/sign-file, or a MOK key under Secure Boot), or boot without module.sig_enforce: %w", err, ErrRejected)
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("load livepatch module: %v: the kernel refuses unsigned modules under lockdown (Secure Boot, lockdown=integrity) or module loading is disabled (kernel.modules_disabled): sign the module with an enrolled key: %w", err, ErrRejected)
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("load livepatch module: a module of the same name is already loaded: %w", ErrApplied)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("load livepatch module: another livepatch transition is still running: %w", ErrBusy)
	case errors.Is(err, unix.ECANCELED):
		// The pre_patch callback create generates for livesplice.h's
		// PRE_APPLY hooks returns -ECANCELED on a veto (docs/custom-code.md).
		if line := lastKmsg("livesplice: " + modName + ": pre_apply hook "); line != "" {
			return fmt.Errorf("load livepatch module: %w: %s; nothing was loaded", ErrVetoed, strings.TrimPrefix(line, "livesplice: "+modName+": "))
		}
		return fmt.Errorf("load livepatch module: %w (its name and value are in dmesg); nothing was loaded", ErrVetoed)
	case errors.Is(err, unix.ENOEXEC):
		return fmt.Errorf("load livepatch module: %w: the module was built for another kernel (vermagic or symbol versions differ): %w", err, ErrWrongKernel)
	}
	return fmt.Errorf("load livepatch module: %w (see dmesg)", err)
}

// lastKmsg returns the text of the newest kernel log record that contains
// substr ("" if none or the log cannot be read).
func lastKmsg(substr string) string {
	// Raw syscalls: an os.File would wait in Go's poller for the next
	// record instead of returning EAGAIN at the end of the log.
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	found := ""
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EPIPE) {
			continue // records overwritten while reading
		}
		if err != nil || n <= 0 {
			return found
		}
		// "prio,seq,time,flags;text\n" and continuation lines
		_, text, _ := strings.Cut(string(buf[:n]), ";")
		text, _, _ = strings.Cut(text, "\n")
		if strings.Contains(text, substr) {
			found = text
		}
	}
}

// unloadModule removes a module, retrying while its last reference goes
// away (livepatch drops it when the disabled patch is freed).
func unloadModule(name string, deadline time.Duration) error {
	start := time.Now()
	for {
		err := unix.DeleteModule(name, unix.O_NONBLOCK)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("unload module %s: %w", name, err)
		}
		if time.Since(start) > deadline {
			return fmt.Errorf("unload module %s: still in use after %v: %w", name, deadline, ErrBusy)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
