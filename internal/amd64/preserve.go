package amd64

import "encoding/binary"

// PreservingStub is the code by which callers that keep values in
// call-clobbered registers across a call (GCC's -fipa-ra) enter a
// replacement that writes more registers than the function they were
// compiled against:
//
//	push <gpr> ...          ; every general register to keep
//	sub  $n, %rsp           ; room for the xmm registers, %rsp 16-aligned at the call
//	movups %xmm<i>, k(%rsp) ...
//	call new                ; rel32 at CallField, relocated against the new code
//	movups k(%rsp), %xmm<i> ...
//	add  $n, %rsp
//	pop  <gpr> ...          ; reverse order
//	ret
//
// The stub moves the stack by its saves, so it only suits functions that
// take no argument on the stack (create refuses the others).
type PreservingStub struct {
	Code      []byte
	CallField int // offset of the call's rel32: R_X86_64_PC32, addend -4
	// Frame is an .eh_frame holding one CIE and the stub's FDE (then a
	// zero terminator); its pc_begin at FramePCField is pc-relative, 4
	// bytes: R_X86_64_PC32 against the stub's start, addend 0.
	Frame        []byte
	FramePCField int
}

// NewPreservingStub builds the stub that keeps general registers gprs
// (encoding numbers 0-15) and xmm registers xmms (0-15).
func NewPreservingStub(gprs, xmms []int) PreservingStub {
	var c []byte
	var steps []cfaStep
	off := 8
	for _, r := range gprs {
		if r >= 8 {
			c = append(c, 0x41)
		}
		c = append(c, 0x50+byte(r&7))
		off += 8
		steps = append(steps, cfaStep{len(c), off})
	}
	n := 16 * len(xmms)
	if (8+8*len(gprs)+n)%16 != 0 {
		n += 8
	}
	if n > 0 {
		c = append(c, 0x48, 0x81, 0xec) // sub $imm32, %rsp
		c = binary.LittleEndian.AppendUint32(c, uint32(n))
		off += n
		steps = append(steps, cfaStep{len(c), off})
	}
	mov := func(op byte, x, disp int) {
		if x >= 8 {
			c = append(c, 0x44) // REX.R
		}
		// movups: 0f 11 store, 0f 10 load; modrm mod=10 rm=100 (SIB), SIB base=rsp.
		c = append(c, 0x0f, op, 0x84|byte(x&7)<<3, 0x24)
		c = binary.LittleEndian.AppendUint32(c, uint32(disp))
	}
	for i, x := range xmms {
		mov(0x11, x, 16*i)
	}
	c = append(c, 0xe8, 0, 0, 0, 0)
	call := len(c) - 4
	for i, x := range xmms {
		mov(0x10, x, 16*i)
	}
	if n > 0 {
		c = append(c, 0x48, 0x81, 0xc4) // add $imm32, %rsp
		c = binary.LittleEndian.AppendUint32(c, uint32(n))
		off -= n
		steps = append(steps, cfaStep{len(c), off})
	}
	for i := len(gprs) - 1; i >= 0; i-- {
		r := gprs[i]
		if r >= 8 {
			c = append(c, 0x41)
		}
		c = append(c, 0x58+byte(r&7))
		off -= 8
		steps = append(steps, cfaStep{len(c), off})
	}
	c = append(c, 0xc3)
	s := PreservingStub{Code: c, CallField: call}
	// CFA = %rsp+8, the return address at CFA-8; then as the steps say.
	frame, pc := ehFDE(ehCIE(0x0c, 7, 8, 0x90, 1), uint32(len(c)), cfaSteps(nil, steps))
	s.Frame, s.FramePCField = append(frame, 0, 0, 0, 0), pc
	return s
}
