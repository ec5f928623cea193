// Package kernel is the kernel target: it applies an update of kind
// "kernel" to the running Linux kernel through its livepatch module, after
// proving by run-pre matching (pre code against the text read through
// /proc/kcore, addresses from /proc/kallsyms) that the kernel runs the code
// the update was built for; it follows the livepatch transition, undoes
// updates and shows the loaded ones.
//
// What livesplice loaded is recorded in Host.Run (/run/livesplice/kernel,
// gone at reboot like the modules): one JSON file per update, naming its
// module and the functions it replaced and by what, which is how show tells
// its own livepatches from others and a stacked update finds the code it was
// built on.
package kernel

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/renameio/v2"
	"golang.org/x/sys/unix"

	"livesplice/internal/klp"
	"livesplice/internal/runpre"
	"livesplice/internal/target"
	"livesplice/internal/update"
)

// The kernel's words for the refusals of internal/target (errors.Is matches
// either name); the command line maps the target kinds to exit codes.
var (
	ErrWrongKernel = target.Mark(target.ErrMismatch, "the update is for another kernel")
	ErrBusy        = target.Mark(target.ErrBusy, "livepatch transition did not finish")
	ErrApplied     = target.ErrApplied
	ErrNotApplied  = target.ErrNotApplied
	ErrDependent   = target.Mark(target.ErrDependent, "a later update is loaded on top of it")
	ErrNotRoot     = target.Mark(target.ErrPermission, "patching the kernel needs root")
	ErrRejected    = target.Mark(target.ErrPermission, "the kernel refused the module")
	ErrVetoed      = target.Mark(target.ErrHook, "a PRE_APPLY hook of the update vetoed it")
	ErrHiddenAddrs = target.Mark(target.ErrPermission, "/proc/kallsyms shows no addresses (run as root; see /proc/sys/kernel/kptr_restrict)")
)

// stampFormat is RFC 3339 with a fixed width, so that records sort by it.
const stampFormat = "2006-01-02T15:04:05.000000000Z07:00"

// DefaultDeadline bounds a livepatch transition.
const DefaultDeadline = 60 * time.Second

// Host says where the kernel's interfaces are (tests point them elsewhere).
type Host struct {
	Proc string // /proc
	Sys  string // /sys
	Run  string // livesplice's records: /run/livesplice/kernel
}

// System is the running machine.
var System = Host{Proc: "/proc", Sys: "/sys", Run: "/run/livesplice/kernel"}

// Options are the target's (Deadline bounds the transition, DefaultDeadline
// when 0; Log gets progress; HookTimeout is unused: the hooks are livepatch
// callbacks, run by the kernel).
type Options = target.Options

// PatchedFunc is a function a loaded update replaces.
type PatchedFunc struct {
	Object string `json:"object"`           // "vmlinux" or a module's name
	Name   string `json:"name"`             // the replaced function
	Sympos int    `json:"sympos,omitempty"` // its position among same-named symbols (0: unique)
	New    string `json:"new,omitempty"`    // the replacement's symbol in the update's module
}

// record is what livesplice keeps about an update it loaded.
type record struct {
	ID        string        `json:"id"`
	Module    string        `json:"module"`
	Release   string        `json:"release"`
	AppliedAt string        `json:"applied_at"`
	Requires  []string      `json:"requires,omitempty"`
	Funcs     []PatchedFunc `json:"funcs"`
}

func (h *Host) recordPath(id string) string { return filepath.Join(h.Run, id+".json") }

func (h *Host) records() ([]record, error) {
	ents, err := os.ReadDir(h.Run)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read livesplice kernel records: %w", err)
	}
	var out []record
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(h.Run, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read livesplice kernel record: %w", err)
		}
		var r record
		if err := json.Unmarshal(b, &r); err != nil || !update.ValidID(r.ID) || !update.ValidID(r.Module) {
			return nil, fmt.Errorf("%s: corrupt livesplice kernel record", filepath.Join(h.Run, e.Name()))
		}
		out = append(out, r)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].AppliedAt < out[j].AppliedAt })
	return out, nil
}

func (h *Host) writeRecord(r record) error {
	if err := os.MkdirAll(h.Run, 0o700); err != nil {
		return fmt.Errorf("record update: %w", err)
	}
	b, err := json.MarshalIndent(r, "", " ")
	if err != nil {
		return err
	}
	if err := renameio.WriteFile(h.recordPath(r.ID), b, 0o600); err != nil {
		return fmt.Errorf("record update: %w", err)
	}
	return nil
}

// lock keeps two livesplice processes from working on the kernel at once.
// The returned function releases it.
func (h *Host) lock() (func(), error) {
	return h.lockWait(0, Options{})
}

// lockWait is lock, waiting up to wait for another livesplice to finish
// (reporting, with o.Log, what that one waits for: a transition's tasks).
func (h *Host) lockWait(wait time.Duration, o Options) (func(), error) {
	if err := os.MkdirAll(h.Run, 0o700); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(h.Run, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	start, next := time.Now(), time.Duration(0)
	for {
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
			return func() { f.Close() }, nil
		}
		el := time.Since(start)
		if el >= wait {
			f.Close()
			if wait > 0 {
				return nil, fmt.Errorf("another livesplice is working on the kernel, still after %v (%s): %w", wait.Round(time.Second), h.transitions(), ErrBusy)
			}
			return nil, fmt.Errorf("another livesplice is working on the kernel: %w", ErrBusy)
		}
		if el >= next {
			o.Logf("waiting for another livesplice working on the kernel (%s)", h.transitions())
			next += 3 * time.Second
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Release is the running kernel's `uname -r`.
func Release() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", err
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}

// checkRelease refuses a kernel update built for another release than
// running (uname -r): livepatch modules and run-pre code are per release.
func checkRelease(f *update.File, running string) error {
	if f.Kernel == nil || f.Kernel.Release != running {
		built := "no kernel"
		if f.Kernel != nil {
			built = "kernel " + f.Kernel.Release
		}
		return fmt.Errorf("update %s was built for %s, this one runs %s: %w", f.ID, built, running, ErrWrongKernel)
	}
	return nil
}

// Apply verifies the update against the running kernel and loads it.
func (h *Host) Apply(f *update.File, o Options) error {
	if err := target.CheckKind(h.Target(), f); err != nil {
		return err
	}
	if f.Kernel == nil {
		return fmt.Errorf("update %s: a kernel update without its kernel section (corrupt file; create it again)", f.ID)
	}
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	rel, err := Release()
	if err != nil {
		return err
	}
	if err := checkRelease(f, rel); err != nil {
		return err
	}
	unlock, err := h.lockWait(o.DeadlineOr(DefaultDeadline), o)
	if err != nil {
		return err
	}
	defer unlock()
	recs, err := h.records()
	if err != nil {
		return err
	}
	mod := f.Kernel.ModuleName
	for _, r := range recs {
		if r.ID == f.ID && h.patchLoaded(r.Module) {
			return fmt.Errorf("update %s: %w (livepatch %s)", f.ID, ErrApplied, r.Module)
		}
	}
	if h.patchLoaded(mod) {
		for _, r := range recs {
			if r.Module == mod && r.ID != f.ID {
				// Ids that differ only in '.', '-' or '_' name one module.
				return fmt.Errorf("update %s: its livepatch module %s is already loaded for update %s: %w (create it again with another --id)", f.ID, mod, r.ID, ErrApplied)
			}
		}
		return fmt.Errorf("update %s: a livepatch named %s is already loaded: %w", f.ID, mod, ErrApplied)
	}
	for _, req := range f.Requires {
		ok := false
		for _, r := range recs {
			if r.ID == req && h.patchLoaded(r.Module) {
				en, _ := h.readFlag(r.Module, "enabled")
				ok = en
			}
		}
		if !ok {
			return fmt.Errorf("update %s was built on update %s, which is not applied: %w", f.ID, req, ErrNotApplied)
		}
	}

	funcs, pins, err := h.verify(f, recs, o)
	if err != nil {
		return err
	}
	// Statics whose name is not unique in their object: run-pre matching
	// found which one the pre code uses; the module's livepatch symbol
	// says so by position (livepatch refuses ",0" for them).
	ko := f.Kernel.Module
	for _, p := range pins {
		if nk, err := klp.SetSymbolSympos(ko, p.Object, p.Name, p.Sympos); err == nil {
			ko = nk
			o.Logf("livepatch symbol %s of %s: position %d", p.Name, p.Object, p.Sympos)
		}
	}

	rec := record{ID: f.ID, Module: mod, Release: f.Kernel.Release, Requires: f.Requires, Funcs: funcs,
		AppliedAt: time.Now().UTC().Format(stampFormat)}
	if err := h.writeRecord(rec); err != nil {
		return err
	}
	start := time.Now()
	if err := h.loadWaiting(ko, mod, o); err != nil {
		os.Remove(h.recordPath(f.ID))
		return fmt.Errorf("update %s: %w", f.ID, err)
	}
	if !h.patchLoaded(mod) {
		err := unloadModule(mod, o.DeadlineOr(DefaultDeadline))
		os.Remove(h.recordPath(f.ID))
		return errors.Join(fmt.Errorf("update %s: module %s loaded but made no livepatch of that name", f.ID, mod), err)
	}
	if err := h.waitTransition(mod, o.DeadlineOr(DefaultDeadline), true, o); err != nil {
		o.Logf("transition timed out; reversing")
		if rerr := h.reverse(mod, o); rerr != nil {
			return fmt.Errorf("update %s: %w; reversing it failed too: %v (see /sys/kernel/livepatch/%s)", f.ID, err, rerr, mod)
		}
		os.Remove(h.recordPath(f.ID))
		return fmt.Errorf("update %s: %w; reversed, nothing applied", f.ID, err)
	}
	o.Logf("livepatch %s enabled, transition took %v", mod, time.Since(start).Round(time.Millisecond))
	return nil
}

// reverse takes a patch out whose transition is still running or done:
// disable (which reverses a running transition), wait, unload.
func (h *Host) reverse(mod string, o Options) error {
	if err := h.writeFlag(mod, "enabled", "0"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("disable livepatch %s: %w", mod, err)
	}
	if err := h.waitTransition(mod, o.DeadlineOr(DefaultDeadline), false, o); err != nil {
		return err
	}
	return unloadModule(mod, o.DeadlineOr(DefaultDeadline))
}

// verify run-pre matches every replaced function of f against the running
// kernel and returns what the record keeps about them.
func (h *Host) verify(f *update.File, recs []record, o Options) ([]PatchedFunc, []PatchedFunc, error) {
	ks, err := ReadKallsyms(filepath.Join(h.Proc, "kallsyms"))
	if err != nil {
		return nil, nil, err
	}
	mem, err := OpenKcore(filepath.Join(h.Proc, "kcore"))
	if err != nil {
		return nil, nil, err
	}
	defer mem.Close()
	want := map[string]bool{}
	for _, t := range f.Targets {
		for _, fn := range t.Functions {
			want[fn.Name] = true
		}
	}
	klpFuncs, err := NewFuncs(f.Kernel.Module, want)
	if err != nil {
		return nil, nil, err
	}
	var out, pins []PatchedFunc
	for ti := range f.Targets {
		t := &f.Targets[ti]
		obj := objectModule(t.Path)
		if obj != "" && !ks.HasModule(obj) {
			// livepatch patches the module when it loads; nothing runs it now.
			o.Logf("module %s is not loaded: its functions are patched when it loads, unverified", obj)
		}
		m := &matcher{ks: ks, syms: t.Symbols, module: obj, known: map[int]uint64{}, read: mem.ReadMem, secs: t.Sections}
		for _, fn := range t.Functions {
			if fn.Status != update.StatusReplaced {
				continue
			}
			pf := PatchedFunc{Object: t.Path, Name: fn.Name}
			var kfs []KlpFunc
			for _, kf := range klpFuncs {
				if kf.Old == fn.Name {
					kfs = append(kfs, kf)
				}
			}
			if len(kfs) > 1 {
				return nil, nil, fmt.Errorf("run-pre match %s: %w: the module replaces %d functions of that name", fn.Name, runpre.ErrAmbiguous, len(kfs))
			}
			if len(kfs) == 1 {
				pf.New, pf.Sympos = kfs[0].New, kfs[0].Sympos
			}
			out = append(out, pf)
			if obj != "" && !ks.HasModule(obj) {
				continue
			}
			addr, err := h.matchFunc(m, t, fn, pf.Sympos, ks, mem, recs)
			if err != nil {
				return nil, nil, err
			}
			o.Logf("run-pre matched %s at %#x", fn.Name, addr)
		}
		pins = append(pins, staticPositions(ks, t, obj, m.known)...)
	}
	return out, pins, nil
}

// staticPositions gives, for each static of the target the pre code
// refers to whose name several symbols of the object share, its position
// among them in kallsyms order (livepatch's sympos), from the address
// run-pre matching learned.
func staticPositions(ks *Kallsyms, t *update.Target, obj string, known map[int]uint64) []PatchedFunc {
	var out []PatchedFunc
	for yi, addr := range known {
		y := t.Symbols[yi]
		if y.Kind != update.SymLocal {
			continue
		}
		defs := ks.Lookup(y.Name, obj)
		if len(defs) < 2 {
			continue
		}
		for i, d := range defs {
			if d.Addr == addr {
				out = append(out, PatchedFunc{Object: t.Path, Name: y.Name, Sympos: i + 1})
			}
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

// objectModule is the kallsyms module name of a target path.
func objectModule(path string) string {
	if path == "vmlinux" {
		return ""
	}
	return strings.ReplaceAll(path, "-", "_")
}

// matchFunc finds where fn runs and proves it is fn's pre code.
// sympos is the module's old_sympos for it: which of the same-named text
// symbols of the object livepatch will patch (0: the name must be unique).
func (h *Host) matchFunc(m *matcher, t *update.Target, fn update.Function, sympos int, ks *Kallsyms, mem *Kcore, recs []record) (uint64, error) {
	y := t.Symbols[fn.Symbol]
	// livepatch counts sympos among every symbol of the name in the object.
	defs := ks.Lookup(y.Name, m.module)
	switch {
	case len(defs) == 0:
		return 0, fmt.Errorf("run-pre match %s: %w (no such function in %s)", fn.Name, runpre.ErrNotFound, t.Path)
	case sympos > 0:
		if sympos > len(defs) {
			return 0, fmt.Errorf("run-pre match %s: %w (sympos %d, %s has %d)", fn.Name, runpre.ErrNotFound, sympos, t.Path, len(defs))
		}
		defs = defs[sympos-1 : sympos]
	case len(defs) > 1:
		return 0, fmt.Errorf("run-pre match %s: %w: %d symbols of that name in %s and the module gives no sympos", fn.Name, runpre.ErrAmbiguous, len(defs), t.Path)
	}
	if !defs[0].IsText() {
		return 0, fmt.Errorf("run-pre match %s: %w (the symbol in %s is not code)", fn.Name, runpre.ErrNotFound, t.Path)
	}
	addr := defs[0].Addr
	where := t.Path
	// Stacking: the code that runs is the newest loaded replacement.
	if r, nf, ok := h.replacedBy(recs, t.Path, fn.Name, sympos); ok {
		cands := ks.Lookup(nf, r.Module)
		if len(cands) != 1 {
			return 0, fmt.Errorf("run-pre match %s: replaced by update %s, whose replacement %s is not found once in module %s: %w", fn.Name, r.ID, nf, r.Module, runpre.ErrNotFound)
		}
		addr, where = cands[0].Addr, "update "+r.ID
	} else if lp := h.foreignPatch(t.Path, fn.Name); lp != "" {
		return 0, errMismatch(fn.Name, fmt.Errorf("livepatch %s already replaces it and livesplice cannot tell with what", lp))
	}
	run := make([]byte, len(fn.Pre.Data))
	if err := mem.ReadMem(addr, run); err != nil {
		return 0, fmt.Errorf("run-pre match %s: %w", fn.Name, err)
	}
	learned, err := m.match(fn.Pre, addr, run)
	if err != nil {
		return 0, errMismatch(fn.Name, fmt.Errorf("in %s %w", where, err))
	}
	for k, v := range learned {
		m.known[k] = v
	}
	return addr, nil
}

// replacedBy finds the newest loaded update that replaces fn of object.
func (h *Host) replacedBy(recs []record, object, name string, sympos int) (record, string, bool) {
	for i := len(recs) - 1; i >= 0; i-- {
		r := recs[i]
		if !h.patchLoaded(r.Module) {
			continue
		}
		if en, _ := h.readFlag(r.Module, "enabled"); !en {
			continue
		}
		for _, pf := range r.Funcs {
			if pf.Object == object && pf.Name == name && pf.Sympos == sympos && pf.New != "" {
				return r, pf.New, true
			}
		}
	}
	return record{}, "", false
}

// foreignPatch names a loaded livepatch not followed by replacedBy that
// replaces name in object.
func (h *Host) foreignPatch(object, name string) string {
	ents, _ := os.ReadDir(filepath.Join(h.Sys, "kernel", "livepatch"))
	for _, e := range ents {
		for _, pf := range h.patchFuncs(e.Name()) {
			if pf.Object == object && pf.Name == name {
				return e.Name()
			}
		}
	}
	return ""
}

// Undo disables the update's livepatch, waits for the transition and
// unloads its module.
func (h *Host) Undo(id string, o Options) error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	unlock, err := h.lockWait(o.DeadlineOr(DefaultDeadline), o)
	if err != nil {
		return err
	}
	defer unlock()
	recs, err := h.records()
	if err != nil {
		return err
	}
	var rec *record
	for i := range recs {
		if recs[i].ID == id {
			rec = &recs[i]
		}
	}
	if rec == nil {
		return fmt.Errorf("update %s: %w (no livesplice kernel update of that id)", id, ErrNotApplied)
	}
	mod := rec.Module
	for _, r := range recs {
		for _, req := range r.Requires {
			if req == id && h.patchLoaded(r.Module) {
				return fmt.Errorf("update %s: %w: undo %s first", id, ErrDependent, r.ID)
			}
		}
	}
	if !h.patchLoaded(mod) {
		if err := unloadModule(mod, o.DeadlineOr(DefaultDeadline)); err != nil {
			return err
		}
		os.Remove(h.recordPath(id))
		return fmt.Errorf("update %s: %w (livepatch %s is gone)", id, ErrNotApplied, mod)
	}
	if tr, _ := h.readFlag(mod, "transition"); tr {
		// Its own apply is gone (the lock is ours): wait for it as apply would.
		o.Logf("livepatch %s is still in transition; waiting", mod)
		if err := h.waitTransition(mod, o.DeadlineOr(DefaultDeadline), true, o); err != nil {
			return fmt.Errorf("update %s: a transition of livepatch %s is still running: %w", id, mod, err)
		}
	}
	if en, _ := h.readFlag(mod, "enabled"); en {
		if err := h.writeFlag(mod, "enabled", "0"); err != nil {
			if errors.Is(err, unix.EBUSY) {
				return fmt.Errorf("update %s: %w (the kernel disables livepatches newest first): %v", id, ErrDependent, err)
			}
			return fmt.Errorf("update %s: disable livepatch %s: %w", id, mod, err)
		}
		if err := h.waitTransition(mod, o.DeadlineOr(DefaultDeadline), false, o); err != nil {
			// Put the update back as it was rather than leave it half out.
			if werr := h.writeFlag(mod, "enabled", "1"); werr == nil {
				_ = h.waitTransition(mod, o.DeadlineOr(DefaultDeadline), true, o)
			}
			return fmt.Errorf("update %s: %w; left applied", id, err)
		}
	}
	if err := unloadModule(mod, o.DeadlineOr(DefaultDeadline)); err != nil {
		return fmt.Errorf("update %s: %w", id, err)
	}
	if err := os.Remove(h.recordPath(id)); err != nil {
		return fmt.Errorf("update %s: unloaded, but: %w", id, err)
	}
	o.Logf("livepatch %s disabled and unloaded", mod)
	return nil
}

// Shown is one loaded livesplice kernel update, for show.
type Shown struct {
	ID         string        `json:"id"`
	Module     string        `json:"module"`
	State      string        `json:"state"` // "enabled", "disabled", "transition", "unloaded"
	Enabled    bool          `json:"enabled"`
	Transition bool          `json:"transition"`
	AppliedAt  string        `json:"applied_at"`
	Requires   []string      `json:"requires,omitempty"`
	Funcs      []PatchedFunc `json:"funcs"`
}

// Show lists the updates livesplice loaded into the running kernel, oldest
// first, with the state livepatch reports for each.
func (h *Host) Show() ([]Shown, error) {
	recs, err := h.records()
	if err != nil {
		return nil, err
	}
	out := []Shown{}
	for _, r := range recs {
		s := Shown{ID: r.ID, Module: r.Module, AppliedAt: r.AppliedAt, Requires: r.Requires, Funcs: r.Funcs, State: "unloaded"}
		if s.Funcs == nil {
			s.Funcs = []PatchedFunc{}
		}
		if h.patchLoaded(r.Module) {
			s.Enabled, _ = h.readFlag(r.Module, "enabled")
			s.Transition, _ = h.readFlag(r.Module, "transition")
			switch {
			case s.Transition:
				s.State = "transition"
			case s.Enabled:
				s.State = "enabled"
			default:
				s.State = "disabled"
			}
		}
		out = append(out, s)
	}
	return out, nil
}
