// Package amd64 holds what the live patcher knows about x86-64 machine
// code: jump encodings, how relocations are written, and how the linker may
// have rewritten a relocated instruction in the running code.
package amd64

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"math"

	"livesplice/internal/update"
)

// NearJumpSize and FarJumpSize are the sizes of the two trampolines.
const (
	NearJumpSize = 5  // jmp rel32
	FarJumpSize  = 14 // jmp *0(%rip); .quad target
	StubSize     = 16 // a far jump padded for the stubs that reach imports
)

// FitsRel32 reports whether a rel32 at from (address after the field's
// instruction end) can reach to.
func FitsRel32(end, to uint64) bool {
	d := int64(to - end)
	return d >= math.MinInt32 && d <= math.MaxInt32
}

// Jump encodes the shortest jump from `from` to `to`.
func Jump(from, to uint64) []byte {
	if FitsRel32(from+NearJumpSize, to) {
		b := []byte{0xe9, 0, 0, 0, 0}
		binary.LittleEndian.PutUint32(b[1:], uint32(int32(int64(to-(from+NearJumpSize)))))
		return b
	}
	return FarJump(to)
}

// FarJump encodes an absolute jump that works from anywhere.
func FarJump(to uint64) []byte {
	b := []byte{0xff, 0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint64(b[6:], to)
	return b
}

// JumpTarget decodes a jump written by Jump at from, if b starts with one.
func JumpTarget(from uint64, b []byte) (uint64, bool) {
	if len(b) >= NearJumpSize && b[0] == 0xe9 {
		return from + NearJumpSize + uint64(int64(int32(binary.LittleEndian.Uint32(b[1:])))), true
	}
	if len(b) >= FarJumpSize && b[0] == 0xff && b[1] == 0x25 && binary.LittleEndian.Uint32(b[2:]) == 0 {
		return binary.LittleEndian.Uint64(b[6:]), true
	}
	return 0, false
}

// Write stores the value of relocation typ at off in buf, where the field
// lives at address p, the symbol is at s and a GOT slot holding s (for the
// GOT types) is at got.
func Write(buf []byte, off uint64, typ uint32, p, s uint64, a int64, got uint64) error {
	w := uint64(update.RelocWidth(typ))
	if w == 0 || off+w > uint64(len(buf)) {
		return fmt.Errorf("relocation %v at %#x: bad type or place", elf.R_X86_64(typ), off)
	}
	var v int64
	switch elf.R_X86_64(typ) {
	case elf.R_X86_64_PC32, elf.R_X86_64_PLT32, elf.R_X86_64_PC64:
		v = int64(s) + a - int64(p)
	case elf.R_X86_64_GOTPCREL, elf.R_X86_64_GOTPCRELX, elf.R_X86_64_REX_GOTPCRELX, elf.R_X86_64_GOTTPOFF:
		v = int64(got) + a - int64(p)
	case elf.R_X86_64_TLSGD, elf.R_X86_64_TLSLD: // s: the running object's GOT pair
		v = int64(s) + a - int64(p)
	case elf.R_X86_64_TPOFF32, elf.R_X86_64_DTPOFF32: // s: an offset, not an address
		v = int64(s) + a
	case elf.R_X86_64_32:
		u := uint64(int64(s) + a)
		if u > math.MaxUint32 {
			return fmt.Errorf("relocation R_X86_64_32 at %#x: %#x does not fit", off, u)
		}
		binary.LittleEndian.PutUint32(buf[off:], uint32(u))
		return nil
	case elf.R_X86_64_32S, elf.R_X86_64_64:
		v = int64(s) + a
	}
	if w == 8 {
		binary.LittleEndian.PutUint64(buf[off:], uint64(v))
		return nil
	}
	if v < math.MinInt32 || v > math.MaxInt32 {
		return fmt.Errorf("relocation %v at %#x: %#x out of 32-bit range", elf.R_X86_64(typ), off, v)
	}
	binary.LittleEndian.PutUint32(buf[off:], uint32(int32(v)))
	return nil
}

// Memory reads the target's memory.
type Memory interface {
	ReadMem(addr uint64, b []byte) error
}

// Direct solves the plain relocation formulas (PC32, PLT32, PC64, 32,
// 32S, 64) for the symbol's address, from the field at off of run placed
// at p; ok is false for any other type. The field must lie in run.
func Direct(run []byte, off uint64, typ uint32, p uint64, a int64) (s uint64, ok bool) {
	v32 := func() int64 { return int64(int32(binary.LittleEndian.Uint32(run[off:]))) }
	switch elf.R_X86_64(typ) {
	case elf.R_X86_64_PC32, elf.R_X86_64_PLT32:
		return uint64(int64(p) + v32() - a), true
	case elf.R_X86_64_PC64:
		return uint64(int64(p) + int64(binary.LittleEndian.Uint64(run[off:])) - a), true
	case elf.R_X86_64_32:
		return uint64(uint32(v32())) - uint64(a), true
	case elf.R_X86_64_32S:
		return uint64(v32() - a), true
	case elf.R_X86_64_64:
		return binary.LittleEndian.Uint64(run[off:]) - uint64(a), true
	}
	return 0, false
}

// Observe reads the address that a relocation of the pre code resolved to
// in the running code: run[off:] is the field, at address p. pre is the pre
// code (to tell which instruction the compiler emitted). It also returns
// how many bytes before the field the linker may have rewritten, which the
// caller must not compare (GOT relaxation).
func Observe(pre, run []byte, off uint64, typ uint32, p uint64, a int64, mem Memory) (s uint64, rewritten int, err error) {
	w := uint64(update.RelocWidth(typ))
	if w == 0 || off+w > uint64(len(run)) || off+w > uint64(len(pre)) {
		return 0, 0, fmt.Errorf("relocation at %#x: bad type or place", off)
	}
	v32 := int64(int32(binary.LittleEndian.Uint32(run[off:])))
	if elf.R_X86_64(typ) == elf.R_X86_64_PC32 {
		if s, n, ok, err := observeViaGOT(pre, run, int(off), p, a, mem); ok || err != nil {
			return s, n, err
		}
	}
	if s, ok := Direct(run, off, typ, p, a); ok {
		return s, 0, nil
	}
	switch elf.R_X86_64(typ) {
	case elf.R_X86_64_TPOFF32, elf.R_X86_64_DTPOFF32:
		return uint64(v32 - a), 0, nil
	case elf.R_X86_64_TLSGD, elf.R_X86_64_TLSLD:
		return uint64(int64(p) + v32 - a), 0, nil
	}
	// GOT forms: unchanged, or relaxed by the linker (binutils 2.40).
	if off >= 2 {
		po, ro := pre[off-2:off], run[off-2:off]
		switch {
		case po[0] == ro[0] && po[1] == ro[1]:
			var slot [8]byte
			if err := mem.ReadMem(uint64(int64(p)+v32-a), slot[:]); err != nil {
				return 0, 0, fmt.Errorf("read GOT slot: %w", err)
			}
			return binary.LittleEndian.Uint64(slot[:]), 0, nil
		case po[0] == 0x8b && ro[0] == 0x8d && po[1] == ro[1]: // mov foo@GOTPCREL -> lea foo
			return uint64(int64(p) + v32 - a), 2, nil
		case po[0] == 0xff && po[1] == 0x15 && ro[0] == 0x67 && ro[1] == 0xe8: // call *foo@GOTPCREL -> addr32 call foo
			return uint64(int64(p) + v32 - a), 2, nil
		case po[0] == 0x8b && ro[0] == 0xc7 && ro[1]&0xf8 == 0xc0: // mov foo@GOTPCREL -> mov $foo
			return uint64(v32), 2, nil
		case po[0] == 0x03 && ro[0] == 0x81 && ro[1]&0xf8 == 0xc0 && elf.R_X86_64(typ) == elf.R_X86_64_GOTTPOFF: // add foo@gottpoff -> add $foo@tpoff
			return uint64(v32), 2, nil
		}
	}
	return 0, 0, fmt.Errorf("relocation at %#x: instruction rewritten in an unknown way", off)
}
