package kernel

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/arch/x86/x86asm"

	"livesplice/internal/amd64"
	"livesplice/internal/klp"
	"livesplice/internal/runpre"
	"livesplice/internal/update"
)

// The kernel rewrites its own text at boot and while it runs, so run-pre
// matching compares the pre code with the running code instruction by
// instruction and accepts, at the places the kernel rewrites, what the
// rewrite may have left there:
//
//   - `call __fentry__` (or the 5-byte nop objtool puts there): a 5-byte nop,
//     or a call/jmp to an ftrace trampoline while the function is traced or
//     livepatched;
//   - `jmp __x86_return_thunk`: `ret` padded with int3, or a jump to the
//     return thunk the CPU needs (RETHUNK);
//   - `call/jmp __x86_indirect_thunk_REG`: the thunk, or `call/jmp *%REG`
//     padded with nops, maybe after an lfence (RETPOLINE);
//   - `call __SCT__*` (static calls): a direct call, a nop, or `ret`;
//   - `call *pv_ops+N(%rip)` (paravirt): the native instructions;
//   - a nop or a jmp (static keys, jump labels, alternatives padding): nops,
//     a jmp, or one of the few instructions alternatives put in such places
//     (lfence, clac/stac, rdtsc(p)), as long as the rewritten stretch ends on
//     an instruction boundary of the pre code.
//
// Everywhere else the bytes must be equal outside relocation fields, and a
// relocation field read from the running code must point at the kallsyms
// address of its symbol (globals: any definition of the name; statics of the
// patched object: one of its definitions, and the same in every function).

// matcher compares pre code against one candidate place.
type matcher struct {
	ks     *Kallsyms
	syms   []update.Symbol
	module string // the patched object: "" for vmlinux
	known  map[int]uint64
	// read reads running kernel memory (kcore), to look at what a
	// rewritten branch goes to; nil in tests that have none.
	read func(addr uint64, b []byte) error
	secs []update.Section // the target's pinned read-only data (internal/klp/rodata.go)
}

// match compares pre with the running code run at addr and returns the
// addresses of static symbols it learned.
func (m *matcher) match(pre *update.Code, addr uint64, run []byte) (map[int]uint64, error) {
	p := pre.Data
	n := len(p)
	if len(run) < n {
		return nil, fmt.Errorf("at %#x: only %d bytes readable, pre code has %d", addr, len(run), n)
	}
	learned := map[int]uint64{}
	for i := 0; i < n; {
		l := insnLen(p[i:])
		rs := relocsIn(pre.Relocs, i, i+l)
		if len(rs) > 0 {
			if err := m.relocated(p, run, i, l, rs, addr, learned); err != nil {
				return nil, fmt.Errorf("at %#x (+%#x): %w", addr, i, err)
			}
			i += l
			continue
		}
		if bytes.Equal(p[i:i+l], run[i:i+l]) {
			i += l
			continue
		}
		// fentry site converted to a nop at build time, traced now.
		if (i == 0 || (i == 4 && isEndbr(p))) && isNop5(p[i:i+l]) && (run[i] == 0xe8 || run[i] == 0xe9) {
			i += l
			continue
		}
		end, ok := rewritten(p, run, i, n, pre.Relocs)
		if !ok {
			k := i
			for k < i+l && p[k] == run[k] {
				k++
			}
			return nil, fmt.Errorf("at %#x: code differs at +%#x (instruction at +%#x: running % x, expected % x)", addr, k, i, run[i:i+l], p[i:i+l])
		}
		i = end
	}
	return learned, nil
}

// relocated checks an instruction of the pre code holding relocations.
func (m *matcher) relocated(p, run []byte, i, l int, rs []update.Reloc, addr uint64, learned map[int]uint64) error {
	for _, r := range rs {
		y := m.syms[r.Symbol]
		switch name := y.Name; {
		case name == "__fentry__":
			if isNop5(run[i:i+l]) || run[i] == 0xe8 || run[i] == 0xe9 {
				return nil
			}
			return fmt.Errorf("ftrace site rewritten in an unknown way (running % x)", run[i:i+l])
		case name == "__x86_return_thunk":
			if run[i] == 0xc3 || (p[i] == 0x0f && run[i]&0xf0 == 0x70) {
				return nil // ret (+int3 padding), or jcc.d8 to a ret
			}
			if m.targetIs(run, i, l, r, addr, func(t string) bool { return strings.Contains(t, "return_thunk") }) {
				return nil
			}
			return fmt.Errorf("return thunk site rewritten in an unknown way (running % x)", run[i:i+l])
		case strings.HasPrefix(name, "__x86_indirect_thunk_"):
			if int(r.Offset)+4 != i+l {
				return fmt.Errorf("retpoline site of an unknown form in the pre code (% x)", p[i:i+l])
			}
			return m.retpolineSite(p[i:i+l], run[i:i+l], addr+uint64(i), r, strings.TrimPrefix(name, "__x86_indirect_thunk_"))
		case strings.HasPrefix(name, "__SCT__"):
			if isNop5(run[i:i+l]) || run[i] == 0xe8 || run[i] == 0xe9 || run[i] == 0xc3 {
				return nil
			}
			return fmt.Errorf("static call site rewritten in an unknown way (running % x)", run[i:i+l])
		case name == "__livesplice_altinstr_aux":
			// static_cpu_has: create names the jmp into .altinstr_aux so
			// (internal/klp/altaux.go); alternatives replaced it at boot
			// with nops or a jmp to the branch the CPU takes.
			if cpuHasSite(run[i:i+l], addr+uint64(i), addr, addr+uint64(len(p))) || (l >= 5 && bytes.Equal(run[i:i+l-4], p[i:i+l-4])) {
				return nil
			}
			return fmt.Errorf("static_cpu_has site rewritten in an unknown way (running % x)", run[i:i+l])
		case name == "pv_ops":
			return nil // paravirt: patched with native instructions at boot
		}
	}
	// An ordinary instruction: equal outside the fields, fields point where
	// kallsyms says.
	skip := make([]bool, l)
	for _, r := range rs {
		w := update.RelocWidth(r.Type)
		s, err := observe(run, r, addr)
		if err != nil {
			return err
		}
		for k := int(r.Offset); k < int(r.Offset)+w; k++ {
			if k >= i && k < i+l {
				skip[k-i] = true
			}
		}
		if err := m.check(r.Symbol, s, learned); err != nil {
			return err
		}
		if err := m.checkRodata(r, s, addr, i, l); err != nil {
			return err
		}
	}
	for k := 0; k < l; k++ {
		if !skip[k] && p[i+k] != run[i+k] {
			return fmt.Errorf("code differs at +%#x (running %#02x, expected %#02x)", i+k, run[i+k], p[i+k])
		}
	}
	return nil
}

// check verifies that symbol index yi really is at s.
func (m *matcher) check(yi int, s uint64, learned map[int]uint64) error {
	y := m.syms[yi]
	switch y.Kind {
	case update.SymGlobal:
		defs := m.ks.Any(y.Name)
		if len(defs) == 0 {
			return nil // not in kallsyms (e.g. a linker-script symbol): nothing to check against
		}
		for _, d := range defs {
			if d.Addr == s {
				return nil
			}
		}
		got := "an unknown address"
		if at, ok := m.ks.At(s); ok {
			got = fmt.Sprintf("%s+%#x", at.Name, s-at.Addr)
		}
		return fmt.Errorf("refers to %s where the update expects %s", got, y.Name)
	case update.SymLocal:
		if v, ok := m.known[yi]; ok && v != s {
			return fmt.Errorf("%s is at %#x here but at %#x in another function", y.Name, s, v)
		}
		if v, ok := learned[yi]; ok && v != s {
			return fmt.Errorf("%s seen at %#x and %#x", y.Name, s, v)
		}
		defs := m.ks.Lookup(y.Name, m.module)
		if len(defs) > 0 {
			ok := false
			for _, d := range defs {
				ok = ok || d.Addr == s
			}
			if !ok {
				return fmt.Errorf("refers to %#x, where no %s of this object is", s, y.Name)
			}
		}
		learned[yi] = s
	}
	return nil // section and anonymous targets: nothing to learn
}

// targetIs reports whether the rel32 call/jmp/jcc at run[i:i+l] goes to
// the start of a symbol whose name satisfies ok (any of the names at that
// address: kallsyms often has several).
func (m *matcher) targetIs(run []byte, i, l int, r update.Reloc, addr uint64, ok func(string) bool) bool {
	if int(r.Offset)+4 != i+l || update.RelocWidth(r.Type) != 4 {
		return false
	}
	for _, s := range m.ks.AllAt(rel32Dest(run[i:i+l], addr+uint64(i))) {
		if ok(s.Name) {
			return true
		}
	}
	return false
}

// rel32Dest is where the instruction b at addr, ending in a rel32, goes.
func rel32Dest(b []byte, addr uint64) uint64 {
	return addr + uint64(len(b)) + uint64(int64(int32(binary.LittleEndian.Uint32(b[len(b)-4:]))))
}

// observe reads the symbol address a relocation field of the running code
// at addr resolved to (S in the psABI's formulas).
func observe(run []byte, r update.Reloc, addr uint64) (uint64, error) {
	off := r.Offset
	if w := uint64(update.RelocWidth(r.Type)); w == 0 || off > uint64(len(run)) || uint64(len(run))-off < w {
		return 0, fmt.Errorf("relocation at +%#x outside the code", off)
	}
	if s, ok := amd64.Direct(run, off, r.Type, addr+off, r.Addend); ok {
		return s, nil
	}
	return 0, fmt.Errorf("relocation type %v at +%#x does not occur in kernel code", elf.R_X86_64(r.Type), off)
}

// relocsIn returns the relocations whose field starts in [from, to).
func relocsIn(rs []update.Reloc, from, to int) []update.Reloc {
	var out []update.Reloc
	for _, r := range rs {
		if int(r.Offset) >= from && int(r.Offset) < to {
			out = append(out, r)
		}
	}
	return out
}

// rewritten accepts a stretch of running code that differs from the pre
// code at i, if both sides are things the kernel puts in patched places,
// and returns where the stretch ends (an instruction boundary of both).
func rewritten(p, run []byte, i, n int, rs []update.Reloc) (int, bool) {
	pe := i // end of the pre stretch
	re := i // end of the running stretch
	for {
		if pe <= re {
			if pe >= n {
				return 0, false
			}
			l, ok := patchable(p[pe:])
			if !ok || len(relocsIn(rs, pe, pe+l)) > 0 {
				return 0, false
			}
			pe += l
		} else {
			l, ok := patchable(run[re:n])
			if !ok {
				return 0, false
			}
			re += l
		}
		if pe == re && pe > i {
			return pe, true
		}
	}
}

// patchable decodes an instruction the kernel writes into a rewritable
// place: nops, int3 padding, jumps, and the instructions alternatives
// commonly substitute.
func patchable(b []byte) (int, bool) {
	if len(b) >= 3 && b[0] == 0x0f && b[1] == 0x01 && (b[2] == 0xca || b[2] == 0xcb || b[2] == 0xf9) {
		return 3, true // clac, stac, rdtscp
	}
	inst, err := x86asm.Decode(b, 64)
	if err != nil {
		return 0, false
	}
	switch inst.Op {
	case x86asm.NOP, x86asm.LFENCE, x86asm.MFENCE, x86asm.SFENCE, x86asm.RDTSC, x86asm.RDTSCP:
		return inst.Len, true
	case x86asm.INT:
		return inst.Len, inst.Len == 1
	case x86asm.JMP:
		_, rel := inst.Args[0].(x86asm.Rel)
		return inst.Len, rel
	}
	return 0, false
}

// thunkRegs are the registers of __x86_indirect_thunk_array in order
// (arch/x86/include/asm/GEN-for-each-reg.h): the index is the register
// number the kernel's rewrite encodes.
var thunkRegs = []string{"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
	"r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"}

// retpolineSite accepts a `call/jmp/jcc __x86_indirect_thunk_REG` of the
// pre code (pre, at addr in the running kernel) in every form the running
// kernel's apply_retpolines (arch/x86/kernel/alternative.c, 6.1 stable)
// can leave it in, and nothing else:
//
//   - untouched (RETPOLINE): still a call/jmp/jcc to the thunk of REG;
//   - inlined (spectre_v2 off or eIBRS, or RETPOLINE_LFENCE): for a jcc a
//     jncc.d8 over the rest, then an optional lfence, `call/jmp *%REG`, an
//     int3 after a jmp, and nops to the end of the site;
//   - ITS (Intel parts with indirect target selection): the same
//     call/jmp/jcc (a 6-byte call/jmp gets a CS prefix) to
//     __x86_indirect_its_thunk_REG, or to a thunk the kernel allocated in
//     module space, which is `jmp *%REG; int3`.
func (m *matcher) retpolineSite(pre, run []byte, addr uint64, r update.Reloc, regName string) error {
	reg := slices.Index(thunkRegs, regName)
	l := len(pre)
	op, ok := branchOp(pre)
	if reg < 0 || !ok || update.RelocWidth(r.Type) != 4 {
		return fmt.Errorf("retpoline site of an unknown form in the pre code (% x)", pre)
	}
	bad := fmt.Errorf("retpoline site rewritten in a way the kernel does not (running % x)", run)
	// Untouched or ITS: the same branch to a thunk.
	if sameBranch(pre, run) {
		dest := rel32Dest(run, addr)
		for _, s := range m.ks.AllAt(dest) {
			if s.Name == "__x86_indirect_thunk_"+regName || s.Name == "__x86_indirect_its_thunk_"+regName {
				return nil
			}
		}
		if m.itsThunk(dest, reg) {
			return nil
		}
		return fmt.Errorf("retpoline site goes to %s, not to a thunk of %%%s (running % x)", m.describe(dest), regName, run)
	}
	// Inlined.
	at := 0
	if op == "jcc" {
		cc := pre[len(pre)-5] & 0xf
		if run[0] != 0x70+(cc^1) || int(run[1]) != l-2 {
			return bad
		}
		at = 2
	}
	if at+3 <= l && bytes.Equal(run[at:at+3], []byte{0x0f, 0xae, 0xe8}) {
		at += 3 // lfence
	}
	want := indirectBranch(op != "call", reg)
	if at+len(want) > l || !bytes.Equal(run[at:at+len(want)], want) {
		return bad
	}
	at += len(want)
	if op != "call" && at < l && run[at] == 0xcc {
		at++
	}
	for at < l { // padding, which optimize_nops may have merged
		inst, err := x86asm.Decode(run[at:l], 64)
		if err != nil || inst.Op != x86asm.NOP {
			return bad
		}
		at += inst.Len
	}
	return nil
}

// branchOp classifies a rel32 branch: call, jmp or jcc (with an optional
// CS prefix on call/jmp).
func branchOp(b []byte) (string, bool) {
	if len(b) == 6 && b[0] == 0x2e {
		b = b[1:]
	}
	switch {
	case len(b) == 5 && b[0] == 0xe8:
		return "call", true
	case len(b) == 5 && b[0] == 0xe9:
		return "jmp", true
	case len(b) == 6 && b[0] == 0x0f && b[1]&0xf0 == 0x80:
		return "jcc", true
	}
	return "", false
}

// sameBranch: run is the branch pre is, with its own rel32 (an ITS rewrite
// of a 6-byte call/jmp adds a CS prefix in place of whatever was there).
func sameBranch(pre, run []byte) bool {
	po, _ := branchOp(pre)
	ro, ok := branchOp(run)
	if !ok || po != ro || len(pre) != len(run) {
		return false
	}
	if po == "jcc" {
		return run[1] == pre[1]
	}
	return true
}

// indirectBranch encodes `call *%reg` or `jmp *%reg` (emit_indirect).
func indirectBranch(jmp bool, reg int) []byte {
	modrm := byte(0xd0)
	if jmp {
		modrm = 0xe0
	}
	if reg >= 8 {
		return []byte{0x41, 0xff, modrm + byte(reg-8)}
	}
	return []byte{0xff, modrm + byte(reg)}
}

// itsThunk reports whether dest holds a thunk the kernel allocated for
// ITS (its_init_thunk: `jmp *%reg; int3`).
func (m *matcher) itsThunk(dest uint64, reg int) bool {
	if m.read == nil {
		return false
	}
	want := append(indirectBranch(true, reg), 0xcc)
	got := make([]byte, len(want))
	return m.read(dest, got) == nil && bytes.Equal(got, want)
}

// describe names an address for a refusal.
func (m *matcher) describe(a uint64) string {
	if s, ok := m.ks.At(a); ok {
		return fmt.Sprintf("%s+%#x", s.Name, a-s.Addr)
	}
	return fmt.Sprintf("%#x", a)
}

// checkRodata compares the read-only data a relocation of the pre code
// refers to (when create pinned it: SymSection in a kernel target) with
// the running kernel's bytes at the place the running instruction refers
// to. s is the symbol address observed from the running field.
func (m *matcher) checkRodata(r update.Reloc, s, addr uint64, i, l int) error {
	y := m.syms[r.Symbol]
	if y.Kind != update.SymSection || y.Section < 0 || y.Section >= len(m.secs) {
		return nil
	}
	sec := m.secs[y.Section]
	place := r.Addend + int64(y.Offset)
	run := s + uint64(r.Addend) + y.Offset
	switch elf.R_X86_64(r.Type) {
	case elf.R_X86_64_PC32, elf.R_X86_64_PLT32, elf.R_X86_64_PC64:
		// The CPU adds the displacement to the end of the instruction.
		bias := int64(i+l) - int64(r.Offset)
		place += bias
		run += uint64(bias)
	}
	if place < 0 || place >= int64(len(sec.Data)) {
		return fmt.Errorf("refers to %s+%#x, outside the pre build's section", sec.Name, place)
	}
	want := rodataAt(sec, int(place))
	if len(want) == 0 {
		return nil
	}
	if m.read == nil {
		return fmt.Errorf("cannot read the read-only data %s+%#x refers to", sec.Name, place)
	}
	got := make([]byte, len(want))
	if err := m.read(run, got); err != nil {
		return fmt.Errorf("read-only data at %#x: %w", run, err)
	}
	if !bytes.Equal(got, want) {
		k := 0
		for k < len(got) && got[k] == want[k] {
			k++
		}
		return fmt.Errorf("read-only data it refers to at %#x differs from the update's pre build at +%#x (%s+%#x: running %q, expected %q)", run, k, sec.Name, place, clip(got), clip(want))
	}
	return nil
}

// rodataAt is the data at off of a pinned section that run-pre compares:
// a string to its NUL, one entry of mergeable constants
// (.rodata.cstN), or the rest of a one-object section (bounded).
func rodataAt(sec update.Section, off int) []byte {
	d := sec.Data[off:]
	str, n := klp.RodataKind(sec.Name)
	switch {
	case str:
		if i := bytes.IndexByte(d, 0); i >= 0 {
			return d[:i+1]
		}
		return d
	case n > 0:
		if n > len(d) {
			return nil
		}
		return d[:n]
	}
	return d[:min(len(d), 4096)]
}

func clip(b []byte) []byte {
	if len(b) > 80 {
		return b[:80]
	}
	return b
}

// cpuHasSite accepts what apply_alternatives leaves of a static_cpu_has
// `jmp` into .altinstr_aux at site: nops, or a jmp into the function
// [lo, hi) followed by nops.
func cpuHasSite(b []byte, site, lo, hi uint64) bool {
	for at := 0; at < len(b); {
		inst, err := x86asm.Decode(b[at:], 64)
		if err != nil {
			return false
		}
		switch inst.Op {
		case x86asm.NOP:
		case x86asm.JMP:
			rel, ok := inst.Args[0].(x86asm.Rel)
			dest := site + uint64(at+inst.Len) + uint64(int64(rel))
			if !ok || at != 0 || dest < lo || dest >= hi {
				return false
			}
		default:
			return false
		}
		at += inst.Len
	}
	return true
}

// insnLen is the length of the pre code's instruction at b; 1 when it does
// not decode (the byte is then compared as is).
func insnLen(b []byte) int {
	if len(b) >= 3 && b[0] == 0x0f && b[1] == 0x01 && (b[2] == 0xca || b[2] == 0xcb) {
		return 3
	}
	inst, err := x86asm.Decode(b, 64)
	if err != nil || inst.Len <= 0 || inst.Len > len(b) {
		return 1
	}
	return inst.Len
}

func isNop5(b []byte) bool {
	return len(b) == 5 && bytes.Equal(b, []byte{0x0f, 0x1f, 0x44, 0x00, 0x00})
}

func isEndbr(p []byte) bool {
	return len(p) >= 4 && bytes.Equal(p[:4], []byte{0xf3, 0x0f, 0x1e, 0xfa})
}

// errMismatch wraps runpre.ErrMismatch with the function's name.
func errMismatch(fn string, err error) error {
	return fmt.Errorf("run-pre match %s: %w: %v", fn, runpre.ErrMismatch, err)
}
