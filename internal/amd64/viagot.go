package amd64

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// ThunkSize is the room ViaGOT's thunk needs at most.
const ThunkSize = 32

// ViaGOT makes the instruction of code (running at addr) whose RIP-relative
// field is at off reach its data through a GOT slot at got instead.
//
// Code compiled as -fPIE (or -fno-pie) addresses a library's data, such as
// libc's stderr, directly: the linker of the program gives the program a copy
// of the variable (a copy relocation) and the PC32 field points at it. New
// code that starts to use such a variable has no copy in the running program,
// and the library's own copy lies beyond the reach of 32 bits. Reaching it
// through a GOT slot is what -fPIC code would have done:
//
//	lea sym(%rip),%r  ->  mov got(%rip),%r                 (in place)
//	mov sym(%rip),%r  ->  jmp thunk; nop...                (thunk:)
//	                      mov got(%rip),%r64; mov k(%r64),%r; jmp back
//
// a is the relocation's addend. It returns the thunk to place at thunkAt,
// or nil when the instruction was rewritten in place. Any other instruction
// (stores, byte loads, arithmetic on memory) is refused: it has no free
// register to go through.
func ViaGOT(code []byte, addr uint64, off int, a int64, got, thunkAt uint64) ([]byte, error) {
	s, n := -1, 0
	for at := 0; at < len(code); {
		inst, err := x86asm.Decode(code[at:], 64)
		if err != nil {
			return nil, fmt.Errorf("cannot decode the instruction at +%#x: %v", at, err)
		}
		if off >= at && off < at+inst.Len {
			s, n = at, inst.Len
			break
		}
		at += inst.Len
	}
	if s < 0 {
		return nil, fmt.Errorf("no instruction holds the field at +%#x", off)
	}
	i := s
	p66 := code[i] == 0x66
	if p66 {
		i++
	}
	var rex byte
	if code[i]&0xf0 == 0x40 {
		rex = code[i]
		i++
	}
	// opcode, ModRM with mod=00 rm=101 (RIP-relative), the field, and
	// nothing after it.
	if i+2 != off || s+n != off+4 || code[i+1]&0xc7 != 0x05 {
		return nil, fmt.Errorf("the instruction at +%#x (% x) is not a RIP-relative mov or lea", s, code[s:s+n])
	}
	op := code[i]
	reg := code[i+1] >> 3 & 7
	hi := rex&4 != 0 // REX.R: r8-r15
	end := addr + uint64(s+n)
	k := a + int64(end-(addr+uint64(off))) // offset into the symbol
	rel := func(from, to uint64) []byte {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], uint32(int32(int64(to-from))))
		return b[:]
	}
	if d := int64(got - end); d != int64(int32(d)) {
		return nil, fmt.Errorf("GOT slot out of reach of the instruction at +%#x", s)
	}
	switch {
	case op == 0x8d && rex&8 != 0 && !p66 && k == 0: // lea: load the address instead
		code[i] = 0x8b
		copy(code[off:], rel(end, got))
		return nil, nil
	case op == 0x8b || (op == 0x8d && rex&8 != 0):
	default:
		return nil, fmt.Errorf("the instruction at +%#x (% x) is not a load or lea", s, code[s:s+n])
	}
	if k != int64(int32(k)) {
		return nil, fmt.Errorf("offset %#x into the symbol out of range", k)
	}
	if d := int64(thunkAt - end); d != int64(int32(d)) || int64(got-thunkAt) != int64(int32(int64(got-thunkAt))) {
		return nil, fmt.Errorf("thunk out of reach of the instruction at +%#x", s)
	}
	// mov got(%rip),%r64
	r64 := byte(0x48)
	if hi {
		r64 |= 4
	}
	t := []byte{r64, 0x8b, 0x05 | reg<<3}
	t = append(t, rel(thunkAt+7, got)...)
	// mov k(%r64),%r (or lea): the original operand size, base = the same register.
	if p66 {
		t = append(t, 0x66)
	}
	x := 0x40 | rex&8 // REX.W as before
	if hi {
		x |= 4 | 1 // REX.R and REX.B: the same r8-r15 register
	}
	if x != 0x40 || rex != 0 {
		t = append(t, x)
	}
	t = append(t, op, 0x80|reg<<3|reg)
	if reg == 4 {
		t = append(t, 0x24) // SIB: base only
	}
	var kb [4]byte
	binary.LittleEndian.PutUint32(kb[:], uint32(int32(k)))
	t = append(t, kb[:]...)
	t = append(t, 0xe9)
	t = append(t, rel(thunkAt+uint64(len(t))+4, end)...)
	// The instruction becomes a jump to the thunk; the rest of it is never
	// reached (nothing branches into the middle of an instruction).
	code[s] = 0xe9
	copy(code[s+1:], rel(addr+uint64(s)+5, thunkAt))
	for j := s + 5; j < s+n; j++ {
		code[j] = 0x90
	}
	return t, nil
}

// observeViaGOT recognises, in running code that an earlier update placed,
// an instruction ViaGOT rewrote (a stacked update's pre code still has the
// direct reference): it rebuilds what ViaGOT makes of the pre instruction
// with the running GOT slot and thunk, and accepts only an exact match. It
// returns the symbol's address (read from the slot) and how many bytes
// before the field differ. ok is false when the instruction is not one.
func observeViaGOT(pre, run []byte, off int, p uint64, a int64, mem Memory) (s uint64, rewritten int, ok bool, err error) {
	if off < 2 || off+4 > len(run) || (pre[off-2] == run[off-2] && pre[off-1] == run[off-1]) {
		return 0, 0, false, nil
	}
	fn := p - uint64(off) // address of code[0]
	slot := func(got uint64) (uint64, error) {
		var b [8]byte
		if err := mem.ReadMem(got, b[:]); err != nil {
			return 0, fmt.Errorf("read GOT slot: %w", err)
		}
		return binary.LittleEndian.Uint64(b[:]), nil
	}
	// lea sym(%rip) -> mov got(%rip), in place.
	if pre[off-2] == 0x8d && run[off-2] == 0x8b && pre[off-1] == run[off-1] {
		got := uint64(int64(p) + int64(int32(binary.LittleEndian.Uint32(run[off:]))) - a)
		c := bytes.Clone(pre)
		if th, err := ViaGOT(c, fn, off, a, got, 0); err == nil && th == nil && bytes.Equal(c[off-2:off+4], run[off-2:off+4]) {
			v, err := slot(got)
			return v, 2, true, err
		}
		return 0, 0, false, nil
	}
	// mov sym(%rip),%r -> jmp thunk; nop...
	for start := off - 2; start >= max(0, off-4); start-- {
		if run[start] != 0xe9 {
			continue
		}
		thunk := fn + uint64(start+5) + uint64(int64(int32(binary.LittleEndian.Uint32(run[start+1:]))))
		var t [ThunkSize]byte
		if mem.ReadMem(thunk, t[:]) != nil || t[0]&0xfb != 0x48 || t[1] != 0x8b || t[2]&0xc7 != 0x05 {
			continue
		}
		got := thunk + 7 + uint64(int64(int32(binary.LittleEndian.Uint32(t[3:]))))
		c := bytes.Clone(pre)
		th, err := ViaGOT(c, fn, off, a, got, thunk)
		if err != nil || th == nil || !bytes.Equal(c[start:off+4], run[start:off+4]) || !bytes.Equal(th, t[:len(th)]) {
			continue
		}
		v, err := slot(got)
		return v, off - start, true, err
	}
	return 0, 0, false, nil
}

// JumpsOut returns the targets of the rel32 jumps in code (a whole function
// running at addr) that leave it: in code an earlier update placed, the
// thunks ViaGOT made. A thread inside such a thunk is inside the function
// although its PC is not.
func JumpsOut(code []byte, addr uint64) []uint64 {
	var out []uint64
	for off := 0; off < len(code); {
		inst, err := x86asm.Decode(code[off:], 64)
		if err != nil {
			off++
			continue
		}
		if code[off] == 0xe9 && inst.Len == 5 {
			to := addr + uint64(off+5) + uint64(int64(int32(binary.LittleEndian.Uint32(code[off+1:]))))
			if to < addr || to >= addr+uint64(len(code)) {
				out = append(out, to)
			}
		}
		off += inst.Len
	}
	return out
}
