package amd64

import (
	"encoding/binary"
	"fmt"
)

// A return stub is where the safety check sends a busy thread when the
// frame it is busy in returns: its return address on the stack is
// replaced by the stub's entry. The stub clears its pending byte (the
// redirect is consumed), makes a getpid system call, at which a tracer
// stops the thread (PTRACE_SYSCALL) and holds it, and jumps on to the
// original return address, kept in a slot beside the pending byte. It
// changes no register and no flag the caller can see (getpid clobbers
// rax, rcx and r11, which it saves below the stack pointer: at a return,
// nothing of the caller lives there), so it needs no tracer: a livesplice
// killed at any moment leaves stubs that simply forward.
//
// Layout of one stub (ReturnStubSize bytes from its slot start):
//
//	+0  nop                    (so that an unwinder's lookup at the entry minus one finds this FDE)
//	+1  movb $0, pending(%rip) (entry)
//	+8  push %rax; push %rcx; push %r11
//	+12 mov $39, %eax          (getpid)
//	+17 syscall
//	+19 pop %r11; pop %rcx; pop %rax
//	+23 jmp *target(%rip)
const (
	ReturnStubSize = 32
	// ReturnStubEntry is the offset of the entry in a stub's slot.
	ReturnStubEntry = 1
	// ReturnStubSyscallEnd is the offset just after the syscall
	// instruction: where a thread stopped at the stub's system call is.
	ReturnStubSyscallEnd = 19
	// ReturnStubCodeSize is the part of the slot holding instructions.
	ReturnStubCodeSize = 29
	// ReturnStubNr is the system call the stub makes.
	ReturnStubNr = 39 // getpid
)

// ReturnStub encodes the stub whose slot starts at at; pending is the
// address of its pending byte, target the address of the 8-byte slot
// holding the original return address.
func ReturnStub(at, pending, target uint64) ([]byte, error) {
	b := make([]byte, 0, ReturnStubSize)
	b = append(b, 0x90)
	// movb $0, pending(%rip): the rel32 counts from the end of the
	// instruction, which has one immediate byte after the field.
	end := at + 8
	if !FitsRel32(end, pending) || !FitsRel32(at+ReturnStubCodeSize, target) {
		return nil, fmt.Errorf("return stub at %#x: its data is out of reach", at)
	}
	b = append(b, 0xc6, 0x05)
	b = binary.LittleEndian.AppendUint32(b, uint32(int32(int64(pending-end))))
	b = append(b, 0x00)
	b = append(b, 0x50, 0x51, 0x41, 0x53)                  // push %rax; push %rcx; push %r11
	b = append(b, 0xb8, ReturnStubNr, 0, 0, 0, 0x0f, 0x05) // mov $39,%eax; syscall
	b = append(b, 0x41, 0x5b, 0x59, 0x58)                  // pop %r11; pop %rcx; pop %rax
	b = append(b, 0xff, 0x25)                              // jmp *target(%rip)
	b = binary.LittleEndian.AppendUint32(b, uint32(int32(int64(target-(at+ReturnStubCodeSize)))))
	for len(b) < ReturnStubSize {
		b = append(b, 0xcc) // never reached: the jmp above always leaves
	}
	return b, nil
}

// ReturnStubFrames encodes an .eh_frame section, to live at ehAddr, for n
// stubs whose slots start at code (one after the other) and whose target
// slots are at targets + 16*i: a CIE, one FDE per stub, and the zero
// terminator that __register_frame needs. Unwinders (libgcc's for C++
// exceptions and backtrace(), gdb's, livesplice's own) then see through a
// stub, or a frame whose return address is a stub's entry, to the original
// caller: the return address is the value in the target slot, and the
// caller's rsp is the rsp at the stub's entry.
func ReturnStubFrames(ehAddr, code, targets uint64, n int) []byte {
	// No initial instructions: every FDE gives its own rules.
	b := ehCIE()
	for i := 0; i < n; i++ {
		at := code + uint64(i)*ReturnStubSize
		ins := []byte{
			0x0c, 7, 8, // DW_CFA_def_cfa rsp+8
			0x14, 7, 1, // DW_CFA_val_offset rsp = CFA-8: the caller's rsp is the entry's
			0x16, 16, 10, 0x03} // DW_CFA_val_expression ra: DW_OP_addr target, DW_OP_deref
		ins = binary.LittleEndian.AppendUint64(ins, targets+16*uint64(i))
		ins = append(ins, 0x06)
		// After push %rax, %rcx, %r11, pop %r11, %rcx, %rax.
		ins = cfaSteps(ins, []cfaStep{{9, 16}, {10, 24}, {12, 32}, {21, 24}, {22, 16}, {23, 8}})
		var pc int
		b, pc = ehFDE(b, ReturnStubCodeSize, ins)
		binary.LittleEndian.PutUint32(b[pc:], uint32(int32(int64(at-(ehAddr+uint64(pc))))))
	}
	return append(b, 0, 0, 0, 0)
}
