// Package unwind walks the call stacks of a stopped process's threads with
// the CFI of .eh_frame, so the live patcher can tell whether any thread is
// inside a function it wants to replace.
//
// The CFI tables are parsed and interpreted by delve's pkg/dwarf/frame.
// That package panics on some malformed input, so every .eh_frame section
// and every CFA program is validated here (check.go) before delve sees it:
// a corrupt table makes the unwind stop with ErrIncomplete, never a panic.
//
// Signal frames (CIE augmentation 'S', e.g. glibc's __restore_rt) are
// handled: delve parses their CFI (it ignores the 'S' flag itself, but the
// augmentation string is exported), their DW_CFA_def_cfa_expression and
// DW_CFA_expression rules are evaluated by the small DWARF expression
// machine in expr.go, and the frame below a signal frame is looked up at its
// exact pc rather than pc-1, since its pc is the interrupted instruction,
// not a return address.
package unwind

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/go-delve/delve/pkg/dwarf/frame"
	"golang.org/x/sys/unix"

	"livesplice/internal/procfs"
)

// Memory reads the target's memory.
type Memory interface {
	ReadMem(addr uint64, b []byte) error
}

// Frame is one frame of a call stack. For frame 0, PC is the thread's
// current rip; for frame i > 0 it is the return address into the caller
// (or, just below a signal frame, the interrupted instruction). CFA is the
// canonical frame address of the function executing at PC; it is 0 on a
// last frame returned with an error if it could not be computed.
type Frame struct{ PC, CFA uint64 }

// ErrIncomplete is wrapped by every error that leaves a stack partly unwound.
var ErrIncomplete = errors.New("stack not fully unwound")

// DefaultMaxFrames bounds Unwind when it is given max <= 0.
const DefaultMaxFrames = 1024

// maxStackBytes caps StackWords at 8 MiB of stack.
const maxStackBytes = 8 << 20

// stackChunk is how much StackWords reads per ReadMem call.
const stackChunk = 64 << 10

// DWARF register numbers of x86-64 (System V psABI).
const (
	regRAX = 0
	regRDX = 1
	regRCX = 2
	regRBX = 3
	regRSI = 4
	regRDI = 5
	regRBP = 6
	regRSP = 7
	regR8  = 8
	regR15 = 15
	regRA  = 16 // return address column, i.e. rip
	numReg = 17
)

// calleeSaved are the registers a callee must preserve. Their value in the
// caller is assumed equal to the callee's when the CFI has no rule for them
// ("same value"), the convention GCC and glibc rely on.
var calleeSaved = [...]int{regRBX, regRBP, 12, 13, 14, 15}

// regState is a register set of which only some values are known.
type regState struct {
	v     [numReg]uint64
	known uint32
}

func (r *regState) set(reg int, v uint64) { r.v[reg] = v; r.known |= 1 << reg }

func (r *regState) get(reg uint64) (uint64, bool) {
	if reg >= numReg || r.known&(1<<reg) == 0 {
		return 0, false
	}
	return r.v[reg], true
}

func fromPtrace(p *unix.PtraceRegs) regState {
	var r regState
	for reg, v := range [numReg]uint64{
		regRAX: p.Rax, regRDX: p.Rdx, regRCX: p.Rcx, regRBX: p.Rbx,
		regRSI: p.Rsi, regRDI: p.Rdi, regRBP: p.Rbp, regRSP: p.Rsp,
		8: p.R8, 9: p.R9, 10: p.R10, 11: p.R11,
		12: p.R12, 13: p.R13, 14: p.R14, 15: p.R15,
		regRA: p.Rip,
	} {
		r.set(reg, v)
	}
	return r
}

// Unwinder unwinds the threads of one process. It is safe for concurrent use.
type Unwinder struct {
	pid  int
	maps []procfs.Mapping // sorted by Start
	mem  Memory

	mu    sync.Mutex
	mods  map[string]*module // by dev+inode+path, or "[vdso]@start"
	extra []placedCode       // CFI of code in anonymous memory (AddFrames)
	rows  map[uint64]row     // evaluated CFI by pc; never mutated once made
}

// New returns an Unwinder for process pid, whose memory map is maps and
// whose memory is read through mem. Modules' CFI are loaded on first use
// and cached for the Unwinder's life, so maps must stay current: make a
// new Unwinder after the process maps or unmaps code.
func New(pid int, maps []procfs.Mapping, mem Memory) *Unwinder {
	ms := append([]procfs.Mapping(nil), maps...)
	sort.SliceStable(ms, func(i, j int) bool { return ms[i].Start < ms[j].Start })
	return &Unwinder{pid: pid, maps: ms, mem: mem, mods: map[string]*module{}, rows: map[uint64]row{}}
}

// row is the CFI row that holds at one pc.
type row struct {
	fde     *frame.FrameDescriptionEntry
	name    string
	fctx    *frame.FrameContext
	undefRA bool
}

// rowFor finds and evaluates the CFI for pc, memoised: threads of one
// process mostly stand at the same few places (the same sleeping call
// chain), and the live patcher unwinds them all while the world is stopped.
func (u *Unwinder) rowFor(pc uint64) (row, error) {
	u.mu.Lock()
	r, ok := u.rows[pc]
	u.mu.Unlock()
	if ok {
		return r, nil
	}
	fde, bias, name, err := u.fdeFor(pc)
	r = row{fde: fde, name: name}
	if err != nil {
		return r, err
	}
	r.fctx, r.undefRA, err = establish(fde, pc-bias)
	if err != nil {
		return r, err
	}
	u.mu.Lock()
	u.rows[pc] = r
	u.mu.Unlock()
	return r, nil
}

// mapping returns the mapping containing addr.
func (u *Unwinder) mapping(addr uint64) (procfs.Mapping, bool) {
	i := sort.Search(len(u.maps), func(i int) bool { return u.maps[i].End > addr })
	if i < len(u.maps) && u.maps[i].Contains(addr) {
		return u.maps[i], true
	}
	return procfs.Mapping{}, false
}

func (u *Unwinder) read8(addr uint64) (uint64, error) {
	var b [8]byte
	if err := u.mem.ReadMem(addr, b[:]); err != nil {
		return 0, fmt.Errorf("read %#x: %w", addr, err)
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// Unwind walks the stack of a thread stopped with registers regs and returns
// at most max frames (DefaultMaxFrames if max <= 0), innermost first.
//
// It stops with a nil error when the CFI marks the return address undefined
// (glibc's _start and the child side of clone/clone3 do so), when the return
// address is 0, or after max frames. Otherwise it returns the frames found so
// far and an error wrapping ErrIncomplete that names the pc and module.
func (u *Unwinder) Unwind(regs *unix.PtraceRegs, max int) ([]Frame, error) {
	if regs == nil {
		return nil, fmt.Errorf("%w: no registers", ErrIncomplete)
	}
	if max <= 0 {
		max = DefaultMaxFrames
	}
	rs := fromPtrace(regs)
	var frames []Frame
	// exact: pc is the next instruction to run (frame 0, or the frame a
	// signal interrupted), not a return address. A return address may point
	// past the end of a function whose last instruction is a call, so it is
	// looked up at pc-1.
	exact := true
	var prevCFA uint64
	for len(frames) < max {
		pc := rs.v[regRA]
		lookup := pc
		if !exact {
			lookup = pc - 1
		}
		r, err := u.rowFor(lookup)
		fde, name, fctx, undefRA := r.fde, r.name, r.fctx, r.undefRA
		if err != nil {
			return append(frames, Frame{PC: pc}), incomplete(pc, name, "%v", err)
		}
		cfa, err := u.cfa(fctx, &rs)
		if err != nil {
			return append(frames, Frame{PC: pc}), incomplete(pc, name, "CFA: %v", err)
		}
		frames = append(frames, Frame{PC: pc, CFA: cfa})
		signal := isSignalFrame(fde)
		// A signal handler may run on an alternate stack, so the CFA of the
		// signal frame (the interrupted rsp) need not be above the
		// handler's; elsewhere a CFA that does not grow means a loop.
		if len(frames) > 1 && (cfa == prevCFA || cfa < prevCFA && !signal) {
			return frames, incomplete(pc, name, "CFA %#x does not increase (previous %#x)", cfa, prevCFA)
		}
		if fctx.RetAddrReg != regRA {
			return frames, incomplete(pc, name, "unexpected return address column %d", fctx.RetAddrReg)
		}
		raRule, ok := fctx.Regs[regRA]
		if !ok {
			// The x86-64 CIEs always give a rule for the return address;
			// its absence means broken CFI, not the end of the stack.
			return frames, incomplete(pc, name, "no rule for the return address")
		}
		if raRule.Rule == frame.RuleUndefined {
			if undefRA {
				return frames, nil // outermost frame
			}
			return frames, incomplete(pc, name, "return address rule lost (DW_CFA_restore)")
		}
		next, err := u.step(fctx, &rs, cfa)
		if err != nil {
			return frames, incomplete(pc, name, "%v", err)
		}
		if next.v[regRA] == 0 {
			return frames, nil
		}
		exact = signal
		prevCFA = cfa
		rs = next
	}
	return frames, nil
}

func incomplete(pc uint64, module, format string, args ...any) error {
	return fmt.Errorf("%w: pc %#x in %s: %s", ErrIncomplete, pc, module, fmt.Sprintf(format, args...))
}

func isSignalFrame(fde *frame.FrameDescriptionEntry) bool {
	aug := fde.CIE.Augmentation
	return strings.HasPrefix(aug, "z") && strings.ContainsRune(aug[1:], 'S')
}

// cfa computes the canonical frame address of the frame whose registers
// are rs.
func (u *Unwinder) cfa(fctx *frame.FrameContext, rs *regState) (uint64, error) {
	switch fctx.CFA.Rule {
	case frame.RuleCFA:
		v, ok := rs.get(fctx.CFA.Reg)
		if !ok {
			return 0, fmt.Errorf("register %d unknown", fctx.CFA.Reg)
		}
		return v + uint64(fctx.CFA.Offset), nil
	case frame.RuleExpression:
		return u.eval(fctx.CFA.Expression, rs, nil)
	default:
		return 0, fmt.Errorf("unsupported CFA rule %d", fctx.CFA.Rule)
	}
}

// step computes the registers of the caller of the frame whose registers
// are rs and whose CFA is cfa.
func (u *Unwinder) step(fctx *frame.FrameContext, rs *regState, cfa uint64) (regState, error) {
	var next regState
	for _, r := range calleeSaved {
		if v, ok := rs.get(uint64(r)); ok {
			next.set(r, v)
		}
	}
	// On x86-64 the CFA is the caller's rsp after the return; a signal
	// frame overrides it with an explicit rule for rsp below.
	next.set(regRSP, cfa)
	for reg, rule := range fctx.Regs {
		if reg >= numReg {
			continue // vector registers: not needed to unwind
		}
		v, ok, err := u.applyRule(rule, rs, cfa)
		if reg == regRA {
			if err != nil {
				return next, fmt.Errorf("return address: %v", err)
			}
			if !ok {
				return next, fmt.Errorf("return address: unsupported rule %d", rule.Rule)
			}
		}
		switch {
		case ok:
			next.set(int(reg), v)
		case rule.Rule == frame.RuleSameVal:
			if v, ok := rs.get(reg); ok {
				next.set(int(reg), v)
			} else {
				next.known &^= 1 << reg
			}
		case rule.Rule == frame.RuleUndefined && reg != regRSP:
			// Keep the callee-saved value carried over above: delve turns
			// DW_CFA_restore into "undefined" (it never records the CIE's
			// initial rules), and glibc uses DW_CFA_restore after popping a
			// callee-saved register, whose value then equals the caller's.
		case reg != regRSP:
			next.known &^= 1 << reg // value unknown in the caller
		}
	}
	return next, nil
}

// applyRule evaluates one register rule. ok is false if the value is unknown.
func (u *Unwinder) applyRule(rule frame.DWRule, rs *regState, cfa uint64) (v uint64, ok bool, err error) {
	switch rule.Rule {
	case frame.RuleOffset:
		v, err = u.read8(cfa + uint64(rule.Offset))
		return v, err == nil, err
	case frame.RuleValOffset:
		return cfa + uint64(rule.Offset), true, nil
	case frame.RuleRegister:
		v, ok = rs.get(rule.Reg)
		return v, ok, nil
	case frame.RuleExpression:
		addr, err := u.eval(rule.Expression, rs, &cfa)
		if err != nil {
			return 0, false, err
		}
		v, err = u.read8(addr)
		return v, err == nil, err
	case frame.RuleValExpression:
		v, err = u.eval(rule.Expression, rs, &cfa)
		return v, err == nil, err
	}
	return 0, false, nil
}

// StackWords returns every aligned 8-byte word from rsp to the end of the
// mapping containing rsp, at most 8 MiB of them: the conservative fallback
// when Unwind fails, treating any word that looks like a code address as a
// possible return address. On a read error it returns the words read so far
// and an error wrapping ErrIncomplete.
func (u *Unwinder) StackWords(regs *unix.PtraceRegs) ([]uint64, error) {
	if regs == nil {
		return nil, fmt.Errorf("%w: no registers", ErrIncomplete)
	}
	sp := regs.Rsp
	m, ok := u.mapping(sp)
	if !ok {
		return nil, fmt.Errorf("%w: rsp %#x is not mapped", ErrIncomplete, sp)
	}
	start := (sp + 7) &^ 7
	end := m.End
	if start >= end {
		return nil, nil
	}
	if end-start > maxStackBytes {
		end = start + maxStackBytes
	}
	words := make([]uint64, 0, (end-start)/8)
	buf := make([]byte, stackChunk)
	for addr := start; addr+8 <= end; {
		n := min(uint64(len(buf)), (end-addr)&^7)
		b := buf[:n]
		if err := u.mem.ReadMem(addr, b); err != nil {
			return words, fmt.Errorf("%w: read stack at %#x: %v", ErrIncomplete, addr, err)
		}
		for i := 0; i+8 <= len(b); i += 8 {
			words = append(words, binary.LittleEndian.Uint64(b[i:]))
		}
		addr += n
	}
	return words, nil
}
