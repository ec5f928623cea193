package amd64

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"golang.org/x/arch/x86/x86asm"
)

// ErrNotSpliceable is wrapped when a function's first bytes cannot be
// moved into a stub.
var ErrNotSpliceable = errors.New("function entry cannot be redirected")

// GateStubSize is the room a gated stub needs at most.
const GateStubSize = 64

// Displaced returns how many bytes of whole instructions at the start of
// code (running at addr) cover at least need bytes.
func Displaced(code []byte, need int) (int, error) {
	n := 0
	for n < need {
		if n >= len(code) {
			return 0, fmt.Errorf("%w: shorter than a %d-byte jump", ErrNotSpliceable, need)
		}
		inst, err := x86asm.Decode(code[n:], 64)
		if err != nil {
			return 0, fmt.Errorf("%w: cannot decode at +%#x: %v", ErrNotSpliceable, n, err)
		}
		n += inst.Len
	}
	return n, nil
}

// BranchesInto reports the first instruction of code (a whole function
// running at addr) that branches to a place strictly inside (addr+lo,
// addr+hi): a jump written over those bytes would be entered in its middle.
func BranchesInto(code []byte, addr uint64, lo, hi int) (int, bool) {
	at, ok := BranchTo(code, addr, addr+uint64(lo)+1, addr+uint64(hi))
	if !ok {
		return 0, false
	}
	return int(at - addr), true
}

// Relocate copies whole instructions that ran at from so that they run at
// to: PC-relative operands and branches keep their targets; short branches
// become long ones.
func Relocate(code []byte, from, to uint64) ([]byte, error) {
	var out []byte
	for off := 0; off < len(code); {
		inst, err := x86asm.Decode(code[off:], 64)
		if err != nil {
			return nil, fmt.Errorf("%w: cannot decode at +%#x: %v", ErrNotSpliceable, off, err)
		}
		raw := append([]byte{}, code[off:off+inst.Len]...)
		oldEnd := from + uint64(off+inst.Len)
		newAt := to + uint64(len(out))
		if inst.PCRel == 0 {
			out = append(out, raw...)
			off += inst.Len
			continue
		}
		var disp int64
		switch inst.PCRel {
		case 1:
			disp = int64(int8(raw[inst.PCRelOff]))
		case 4:
			disp = int64(int32(binary.LittleEndian.Uint32(raw[inst.PCRelOff:])))
		default:
			return nil, fmt.Errorf("%w: %d-byte PC-relative field at +%#x", ErrNotSpliceable, inst.PCRel, off)
		}
		target := uint64(int64(oldEnd) + disp)
		if inst.PCRel == 1 {
			// A short branch: rebuild it with a 32-bit displacement.
			var long []byte
			switch {
			case raw[0] == 0xeb:
				long = []byte{0xe9, 0, 0, 0, 0}
			case raw[0] >= 0x70 && raw[0] <= 0x7f:
				long = []byte{0x0f, 0x80 + raw[0] - 0x70, 0, 0, 0, 0}
			default:
				return nil, fmt.Errorf("%w: %v at +%#x has no long form", ErrNotSpliceable, inst.Op, off)
			}
			d := int64(target) - int64(newAt+uint64(len(long)))
			if d < math.MinInt32 || d > math.MaxInt32 {
				return nil, fmt.Errorf("%w: branch at +%#x out of reach", ErrNotSpliceable, off)
			}
			binary.LittleEndian.PutUint32(long[len(long)-4:], uint32(int32(d)))
			out = append(out, long...)
			off += inst.Len
			continue
		}
		d := int64(target) - int64(newAt+uint64(inst.Len))
		if d < math.MinInt32 || d > math.MaxInt32 {
			return nil, fmt.Errorf("%w: PC-relative operand at +%#x out of reach", ErrNotSpliceable, off)
		}
		binary.LittleEndian.PutUint32(raw[inst.PCRelOff:], uint32(int32(d)))
		out = append(out, raw...)
		off += inst.Len
	}
	return out, nil
}

// GateStub builds the code a redirected function's entry jumps to:
//
//	cmpb $0, flag(%rip)    ; the update's commit flag
//	jne  newFn             ; committed: the new version
//	<displaced>            ; not (yet, or any more): the old function's
//	jmp  orig+len          ; first instructions, then the rest of it
//
// Writing entry jumps to such stubs changes no behaviour; one write of the
// flag byte then switches every function of the update at once, so a
// livesplice killed at any moment leaves all old or all new. Flags are
// clobbered, which the ABI allows at a call.
func GateStub(at, flag, newFn, orig uint64, displaced []byte) ([]byte, error) {
	b := []byte{0x80, 0x3d, 0, 0, 0, 0, 0x00} // cmpb $0x0, disp32(%rip)
	d := int64(flag) - int64(at+7)
	if d < math.MinInt32 || d > math.MaxInt32 {
		return nil, fmt.Errorf("commit flag out of reach of the stub")
	}
	binary.LittleEndian.PutUint32(b[2:], uint32(int32(d)))
	return gateTail(b, at, newFn, orig, displaced)
}

// IndirectGateStub is GateStub for a commit flag out of rip-relative reach
// (an update's other objects, more than 2 GiB from the first): the flag's
// address is read from ptr, an 8-byte slot near the stub. %rax is saved on
// the stack around the test; at a function's entry the callee's red zone
// is not in use yet, and pop leaves the flags of the compare intact, so
// again only the flags are clobbered.
func IndirectGateStub(at, ptr, newFn, orig uint64, displaced []byte) ([]byte, error) {
	b := []byte{
		0x50,                         // push %rax
		0x48, 0x8b, 0x05, 0, 0, 0, 0, // mov disp32(%rip), %rax
		0x80, 0x38, 0x00, // cmpb $0x0, (%rax)
		0x58, // pop %rax
	}
	d := int64(ptr) - int64(at+8)
	if d < math.MinInt32 || d > math.MaxInt32 {
		return nil, fmt.Errorf("commit flag pointer out of reach of the stub")
	}
	binary.LittleEndian.PutUint32(b[4:], uint32(int32(d)))
	return gateTail(b, at, newFn, orig, displaced)
}

// gateTail appends to a stub's flag test (b, at address at) the jne to the
// new code, the displaced instructions and the jump back to the old code.
func gateTail(b []byte, at, newFn, orig uint64, displaced []byte) ([]byte, error) {
	jne := []byte{0x0f, 0x85, 0, 0, 0, 0}
	d := int64(newFn) - int64(at+uint64(len(b))+6)
	if d < math.MinInt32 || d > math.MaxInt32 {
		return nil, fmt.Errorf("new code out of reach of the stub")
	}
	binary.LittleEndian.PutUint32(jne[2:], uint32(int32(d)))
	b = append(b, jne...)
	moved, err := Relocate(displaced, orig, at+uint64(len(b)))
	if err != nil {
		return nil, err
	}
	b = append(b, moved...)
	back := at + uint64(len(b))
	b = append(b, Jump(back, orig+uint64(len(displaced)))...)
	if len(b) > GateStubSize {
		return nil, fmt.Errorf("%w: stub of %d bytes", ErrNotSpliceable, len(b))
	}
	return b, nil
}

// ShortEntry is Displaced for a function shorter than need bytes: code is
// the function's size bytes followed by what lies between it and the next
// symbol. The jump may cover that tail only if it is alignment padding
// (nops, int3) that nothing executes: the function's last instruction must
// never fall through (ret, jmp, ud2, hlt, int3), no symbol's code starts
// there, and nothing branches into the middle of a padding instruction.
func ShortEntry(code []byte, size, need int) (int, error) {
	if size <= 0 || size > len(code) {
		return 0, fmt.Errorf("%w: shorter than a %d-byte jump", ErrNotSpliceable, need)
	}
	var last x86asm.Inst
	off := 0
	for off < size {
		inst, err := x86asm.Decode(code[off:size], 64)
		if err != nil {
			return 0, fmt.Errorf("%w: cannot decode at +%#x: %v", ErrNotSpliceable, off, err)
		}
		last, off = inst, off+inst.Len
	}
	switch last.Op {
	case x86asm.RET, x86asm.LRET, x86asm.JMP, x86asm.UD2, x86asm.HLT:
	case x86asm.INT:
		if code[size-1] != 0xcc {
			return 0, fmt.Errorf("%w: shorter than a %d-byte jump, and its last instruction (%v) may return into the bytes after it", ErrNotSpliceable, need, last.Op)
		}
	default:
		return 0, fmt.Errorf("%w: shorter than a %d-byte jump, and its last instruction (%v) may fall through into the bytes after it", ErrNotSpliceable, need, last.Op)
	}
	for off < need {
		if off >= len(code) {
			return 0, fmt.Errorf("%w: shorter than a %d-byte jump, with only %d bytes of padding after it before the next symbol", ErrNotSpliceable, need, len(code)-size)
		}
		inst, err := x86asm.Decode(code[off:], 64)
		if err != nil || !filler(code[off:], inst) {
			return 0, fmt.Errorf("%w: shorter than a %d-byte jump, and the bytes after it (% x) are not padding", ErrNotSpliceable, need, code[off:min(len(code), off+8)])
		}
		off += inst.Len
	}
	return off, nil
}

// isNopXchg reports xchg %ax,%ax (66 90, possibly with more 66 prefixes):
// the two-byte nop assemblers pad with.
func isNopXchg(b []byte) bool {
	for len(b) > 1 && b[0] == 0x66 {
		b = b[1:]
	}
	return len(b) == 1 && b[0] == 0x90
}

// HotPatchLead is how many bytes of padding before a function PaddedEntry
// writes into: the 5-byte jmp rel32 that a 2-byte jmp rel8 at the entry
// reaches (what Windows hot-patching does).
const HotPatchLead = NearJumpSize

// Padding proves how many bytes at the end of before are alignment
// padding that nothing runs: before is the code from the start of a
// symbol (at beforeAddr) up to the next one, of which the symbol's size
// says the first symSize bytes are its own (0 if it has no size, as
// crtstuff's functions have none). The padding is the run of filler
// instructions (nops, int3) at the end; it must cover everything after
// the symbol's size, the instruction before it must never fall through
// into it (ret, jmp, ud2, hlt; a call's return would land in it), and no
// instruction before it may branch into it.
func Padding(before []byte, beforeAddr uint64, symSize int) (int, error) {
	var last x86asm.Inst // the last instruction before the padding
	var lastOff int
	padStart := -1
	for off := 0; off < len(before); {
		inst, err := decode(before[off:])
		if err != nil {
			return 0, fmt.Errorf("the code before it does not decode at %#x", beforeAddr+uint64(off))
		}
		if filler(before[off:], inst) {
			if padStart < 0 {
				padStart = off
			}
		} else {
			padStart = -1
			last, lastOff = inst, off
		}
		off += inst.Len
	}
	if padStart < 0 {
		return 0, nil
	}
	if padStart > symSize && symSize > 0 {
		return 0, fmt.Errorf("the bytes at %#x between a symbol and the padding after it (% x) are not padding", beforeAddr+uint64(symSize), before[symSize:min(padStart, symSize+8)])
	}
	if padStart == 0 {
		return 0, fmt.Errorf("a symbol at %#x holds nothing but filler", beforeAddr)
	}
	padAddr := beforeAddr + uint64(padStart)
	if from, ok := BranchTo(before[:padStart], beforeAddr, padAddr, beforeAddr+uint64(len(before))); ok {
		return 0, fmt.Errorf("the instruction at %#x branches into the padding at %#x", from, padAddr)
	}
	switch last.Op {
	case x86asm.RET, x86asm.LRET, x86asm.JMP, x86asm.UD2, x86asm.HLT:
	default:
		return 0, fmt.Errorf("the instruction before the padding at %#x (%v at %#x) may fall through or return into it", padAddr, last.Op, beforeAddr+uint64(lastOff))
	}
	return len(before) - padStart, nil
}

// ShortJumpReach is how far back a jmp rel8 at a function's entry reaches
// from the entry: the 5-byte jump it goes to must start no earlier.
const ShortJumpReach = 128 - 2

// PaddedEntry is the redirect of a function at addr, too short for a
// 5-byte jump, through padding at `at` (before it, within ShortJumpReach):
// orig is the running bytes [at, addr+2); the result is the same with a
// jmp rel32 to stub at `at` and a jmp rel8 to `at` at addr (what Windows
// hot-patching does). The bytes between are written back unchanged.
func PaddedEntry(orig []byte, at, addr, stub uint64) ([]byte, error) {
	if at+NearJumpSize > addr || addr-at > ShortJumpReach || uint64(len(orig)) != addr+2-at {
		return nil, fmt.Errorf("%w: no padding within reach of a 2-byte jump", ErrNotSpliceable)
	}
	if !FitsRel32(at+NearJumpSize, stub) {
		return nil, fmt.Errorf("%w: its gate is out of reach of a jump in the padding before it", ErrNotSpliceable)
	}
	out := append([]byte{}, orig...)
	copy(out, Jump(at, stub))
	out[len(out)-2] = 0xeb
	out[len(out)-1] = byte(int64(at) - int64(addr+2))
	return out, nil
}

// filler reports an instruction assemblers pad with: a nop, int3, or xchg %ax,%ax.
func filler(b []byte, inst x86asm.Inst) bool {
	return inst.Op == x86asm.NOP || (inst.Op == x86asm.INT && b[0] == 0xcc) || (inst.Op == x86asm.XCHG && isNopXchg(b[:inst.Len]))
}

// decode is x86asm.Decode that also knows endbr64 and endbr32 (which it
// decodes as a lone rep prefix), as a 4-byte instruction that does nothing.
func decode(b []byte) (x86asm.Inst, error) {
	if len(b) >= 4 && b[0] == 0xf3 && b[1] == 0x0f && b[2] == 0x1e && (b[3] == 0xfa || b[3] == 0xfb) {
		return x86asm.Inst{Len: 4}, nil // Op 0: no known op, neither filler nor branch
	}
	return x86asm.Decode(b, 64)
}

// BranchTo reports the address of the first instruction of code (running
// at addr, decoded from its start) that branches into [lo, hi).
func BranchTo(code []byte, addr, lo, hi uint64) (uint64, bool) {
	for off := 0; off < len(code); {
		inst, err := decode(code[off:])
		if err != nil {
			off++
			continue
		}
		for _, a := range inst.Args {
			if rel, ok := a.(x86asm.Rel); ok {
				to := addr + uint64(off+inst.Len) + uint64(int64(rel))
				if to >= lo && to < hi {
					return addr + uint64(off), true
				}
			}
		}
		off += inst.Len
	}
	return 0, false
}

// CopyFunction copies a whole function that ran at from so that it runs
// at to: branches inside it keep their offsets (the copy is verbatim),
// PC-relative operands that reach outside it are re-aimed. It refuses code
// that does not decode, a short branch out of the function, and a jump
// through a register or a table (a jump table's targets lie in the
// original).
func CopyFunction(code []byte, from, to uint64) ([]byte, error) {
	out := append([]byte{}, code...)
	end := from + uint64(len(code))
	for off := 0; off < len(code); {
		inst, err := decode(code[off:])
		if err != nil {
			return nil, fmt.Errorf("%w: cannot decode at +%#x: %v", ErrNotSpliceable, off, err)
		}
		if indirectJump(inst) {
			return nil, fmt.Errorf("%w: indirect jump at +%#x", ErrNotSpliceable, off)
		}
		if inst.PCRel > 0 {
			var disp int64
			switch inst.PCRel {
			case 1:
				disp = int64(int8(code[off+inst.PCRelOff]))
			case 4:
				disp = int64(int32(binary.LittleEndian.Uint32(code[off+inst.PCRelOff:])))
			default:
				return nil, fmt.Errorf("%w: %d-byte PC-relative field at +%#x", ErrNotSpliceable, inst.PCRel, off)
			}
			target := uint64(int64(from) + int64(off+inst.Len) + disp)
			if target < from || target >= end {
				if inst.PCRel != 4 {
					return nil, fmt.Errorf("%w: short branch out of the function at +%#x", ErrNotSpliceable, off)
				}
				d := int64(target) - int64(to+uint64(off+inst.Len))
				if d < math.MinInt32 || d > math.MaxInt32 {
					return nil, fmt.Errorf("%w: PC-relative operand at +%#x out of reach", ErrNotSpliceable, off)
				}
				binary.LittleEndian.PutUint32(out[off+inst.PCRelOff:], uint32(int32(d)))
			}
		}
		off += inst.Len
	}
	return out, nil
}

// indirectJump reports a jump whose target is computed from a register or
// a table (not a rip-relative slot: a tail call through the GOT).
func indirectJump(inst x86asm.Inst) bool {
	if inst.Op != x86asm.JMP {
		return false
	}
	switch a := inst.Args[0].(type) {
	case x86asm.Reg:
		return true
	case x86asm.Mem:
		return a.Base != x86asm.RIP
	}
	return false
}
