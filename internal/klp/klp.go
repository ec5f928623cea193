// Package klp turns the pre and post objects of patched kernel units into
// a livepatch: it diffs them with the shared object differ (after setting
// aside the kernel's metadata sections, which move with any code change),
// writes the new code and the kernel tables that describe it (ORC, bug,
// exception and jump tables) into an object whose references to
// non-exported and static kernel symbols become livepatch symbols, generates
// the C stub that declares the klp_patch, and after kbuild linked the module
// turns those references into .klp.rela sections (FixModule). It also gives
// the update file's kernel targets: the replaced functions with their pre
// code for run-pre matching.
package klp

import (
	"debug/elf"
	_ "embed"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"livesplice/internal/objdiff"
	"livesplice/internal/update"
)

// KpatchMacros is livesplice's kpatch-macros.h: create puts it beside every
// patched file of a patch that includes it, so kpatch-build patches build
// unchanged.
//
//go:embed kpatch-macros.h
var KpatchMacros []byte

// KpatchSyscall is livesplice's kpatch-syscall.h (KPATCH_SYSCALL_DEFINEn),
// put beside every patched file of a patch that includes it, as
// KpatchMacros (which it includes).
//
//go:embed kpatch-syscall.h
var KpatchSyscall []byte

// callbackPrefix starts the sections kpatch-macros.h's callback macros
// leave: .livesplice.klp.<kind>, one function pointer each.
const callbackPrefix = ".livesplice.klp."

// callbackKinds are the klp_callbacks members, in struct order.
var callbackKinds = []string{"pre_patch", "post_patch", "pre_unpatch", "post_unpatch"}

// Unit is one compiled translation unit of the kernel, pre and post patch.
type Unit struct {
	Rel    string // object path in the tree, e.g. fs/proc/cmdline.o
	Object string // "vmlinux" or the name of the module it is linked into
	Pre    []byte
	Post   []byte
}

// Func is one function the livepatch replaces.
type Func struct {
	Object  string // "vmlinux" or a module name
	Name    string // the running function's name
	File    string // source file of a static function
	newName string // the global alias of the new code in the module
}

// Result is a livepatch before kbuild links it.
type Result struct {
	Targets []update.Target // kernel form: replaced functions with pre code, no sections
	Funcs   []Func
	Object  []byte // the new code and its tables (relocatable ELF)
	Stub    []byte // C source declaring the klp_patch for Funcs
}

// ErrNoChange is returned when no unit's code changed.
var ErrNoChange = errors.New("the patch changes no kernel code")

// onceStatic names the static flags of WARN_ONCE, printk_once, DO_ONCE and
// lockdep keys: the new code gets fresh copies, as kpatch does, because
// their numbered names cannot be found reliably in the running kernel.
var onceStatic = regexp.MustCompile(`^(__already_done|__warned|__print_once|__once|__done|__key)(\.[0-9]+)?$`)

var cName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// Build diffs the units and assembles the livepatch object and stub.
// exports are the symbols the module loader resolves (Module.symvers).
func Build(units []Unit, exports map[string]bool) (*Result, error) {
	m := &moduleBuilder{obj: newOutObject(), exports: exports, fresh: map[string]int{}, callbacks: map[string]map[string]string{}, hooks: map[string]map[string][]hook{}}
	m.tables = map[string]*tableOut{}
	targets := map[string]*update.Target{}
	var order []string
	// Diff every unit first: a new global one unit defines may be used by
	// another (a new function in vmlinux called from a module's code), and
	// those references must go to the module's own definition.
	var diffed []Unit
	var ts []*update.Target
	m.newGlobals = map[string]bool{}
	for _, u := range units {
		var err error
		if u.Pre, err = canonDyndbg(u.Pre, false); err != nil {
			return nil, fmt.Errorf("%s (pre): %w", u.Rel, err)
		}
		if u.Post, err = canonDyndbg(u.Post, true); err != nil {
			return nil, fmt.Errorf("%s (post): %w", u.Rel, err)
		}
		if u.Pre, err = redirectAux(u.Pre); err != nil {
			return nil, fmt.Errorf("%s (pre): %w", u.Rel, err)
		}
		if u.Post, err = redirectAux(u.Post); err != nil {
			return nil, fmt.Errorf("%s (post): %w", u.Rel, err)
		}
		t, err := diffUnit(u)
		if err != nil {
			return nil, err
		}
		if t == nil || lineOnly(u, t) {
			continue
		}
		diffed, ts = append(diffed, u), append(ts, t)
		for _, s := range t.Sections {
			for _, d := range s.Defs {
				if d.File == "" {
					m.newGlobals[d.Name] = true
				}
			}
		}
	}
	for i, u := range diffed {
		t := ts[i]
		if err := m.addUnit(u, t); err != nil {
			return nil, err
		}
		kt, ok := targets[u.Object]
		if !ok {
			kt = &update.Target{Path: u.Object, Sections: []update.Section{}, Symbols: []update.Symbol{}}
			targets[u.Object] = kt
			order = append(order, u.Object)
		}
		from := len(kt.Functions)
		addKernelFunctions(kt, t)
		if err := pinRodata(kt, from, u.Pre); err != nil {
			return nil, fmt.Errorf("%s (pre): %w", u.Rel, err)
		}
	}
	if len(m.funcs) == 0 && len(m.callbacks) == 0 && len(m.hooks) == 0 {
		return nil, ErrNoChange
	}
	m.finishTables()
	r := &Result{Funcs: m.funcs, Object: m.obj.bytes()}
	sort.Strings(order)
	for _, o := range order {
		r.Targets = append(r.Targets, *targets[o])
	}
	stub, err := stub(m.funcs, m.callbacks, m.hooks)
	if err != nil {
		return nil, err
	}
	r.Stub = stub
	return r, nil
}

// diffUnit runs the object differ on a unit with the kernel's metadata
// sections set aside.
func diffUnit(u Unit) (*update.Target, error) {
	pre, err := neutralize(u.Pre)
	if err != nil {
		return nil, fmt.Errorf("%s (pre): %w", u.Rel, err)
	}
	post, err := neutralize(u.Post)
	if err != nil {
		return nil, fmt.Errorf("%s (post): %w", u.Rel, err)
	}
	b := objdiff.NewBuilder(u.Rel, "", "")
	if err := b.AddObject(u.Rel, pre, post); err != nil {
		return nil, err
	}
	if !b.Changed() {
		return nil, nil
	}
	return b.Target(), nil
}

// addKernelFunctions copies t's replaced functions into the kernel target
// kt: pre code and the symbols it refers to, no sections (the new code
// lives in the module).
func addKernelFunctions(kt *update.Target, t *update.Target) {
	idx := map[int]int{}
	sym := func(i int) int {
		if j, ok := idx[i]; ok {
			return j
		}
		kt.Symbols = append(kt.Symbols, t.Symbols[i])
		idx[i] = len(kt.Symbols) - 1
		return idx[i]
	}
	for _, f := range t.Functions {
		if f.Status != update.StatusReplaced || f.Pre == nil {
			continue
		}
		kf := update.Function{Name: f.Name, File: f.File, Status: f.Status, Symbol: sym(f.Symbol), Section: -1, Size: f.Size}
		pre := &update.Code{Data: f.Pre.Data}
		for _, r := range f.Pre.Relocs {
			r.Symbol = sym(r.Symbol)
			pre.Relocs = append(pre.Relocs, r)
		}
		kf.Pre = pre
		kt.Functions = append(kt.Functions, kf)
	}
}

// KLPSymbol is the name of a livepatch symbol: resolved by the livepatch
// core in object obj (sympos 0: the name must be unique there, which the
// kernel checks when the module loads).
func KLPSymbol(obj, name string) string { return ".klp.sym." + obj + "." + name + ",0" }

func refused(file, sym, format string, args ...any) error {
	return &objdiff.RefusedError{File: file, Symbol: sym, Reason: fmt.Sprintf(format, args...)}
}

func elfFlags(kind string) (elf.SectionType, elf.SectionFlag) {
	switch kind {
	case update.KindText:
		return elf.SHT_PROGBITS, elf.SHF_ALLOC | elf.SHF_EXECINSTR
	case update.KindData:
		return elf.SHT_PROGBITS, elf.SHF_ALLOC | elf.SHF_WRITE
	case update.KindBss:
		return elf.SHT_NOBITS, elf.SHF_ALLOC | elf.SHF_WRITE
	}
	return elf.SHT_PROGBITS, elf.SHF_ALLOC
}

// textSection reports the section names new kernel code may live in: a
// function with its own section. Others (.noinstr.text, .entry.text,
// .sched.text, .altinstr_aux ...) hold code livepatch cannot redirect or
// that create does not take apart.
func textSection(name string) bool {
	return strings.HasPrefix(name, ".text.") && !strings.HasPrefix(name, ".text..")
}
