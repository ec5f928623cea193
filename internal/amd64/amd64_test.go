package amd64

import (
	"debug/elf"
	"encoding/binary"
	"testing"
)

func TestJump(t *testing.T) {
	cases := []struct {
		from, to uint64
		size     int
	}{
		{0x1000, 0x2000, NearJumpSize},
		{0x2000, 0x1000, NearJumpSize},
		{0x1000, 0x1000 + 5 + 0x7fffffff, NearJumpSize},
		{0x1000, 0x1000 + 5 + 0x80000000, FarJumpSize},
		{0x7f0000000000, 0x550000000000, FarJumpSize},
	}
	for _, c := range cases {
		b := Jump(c.from, c.to)
		if len(b) != c.size {
			t.Errorf("Jump(%#x, %#x): %d bytes, want %d", c.from, c.to, len(b), c.size)
		}
		if got, ok := JumpTarget(c.from, b); !ok || got != c.to {
			t.Errorf("JumpTarget(Jump(%#x, %#x)) = %#x, %v", c.from, c.to, got, ok)
		}
	}
	if _, ok := JumpTarget(0, []byte{0x55, 0x48, 0x89, 0xe5, 0x90}); ok {
		t.Error("push rbp decoded as a jump")
	}
}

func TestWrite(t *testing.T) {
	buf := make([]byte, 16)
	if err := Write(buf, 4, uint32(elf.R_X86_64_PC32), 0x1004, 0x2000, -4, 0); err != nil {
		t.Fatal(err)
	}
	if v := int32(binary.LittleEndian.Uint32(buf[4:])); v != 0x2000-4-0x1004 {
		t.Errorf("PC32 = %#x", v)
	}
	if err := Write(buf, 0, uint32(elf.R_X86_64_64), 0, 0x123456789, 8, 0); err != nil || binary.LittleEndian.Uint64(buf) != 0x123456791 {
		t.Errorf("64: %#x %v", binary.LittleEndian.Uint64(buf), err)
	}
	if err := Write(buf, 0, uint32(elf.R_X86_64_PC32), 0, 1<<40, 0, 0); err == nil {
		t.Error("PC32 overflow not reported")
	}
	if err := Write(buf, 0, uint32(elf.R_X86_64_32), 0, 1<<33, 0, 0); err == nil {
		t.Error("32 overflow not reported")
	}
	if err := Write(buf, 14, uint32(elf.R_X86_64_PC32), 0, 0, 0, 0); err == nil {
		t.Error("field past the end not reported")
	}
	if err := Write(buf, 0, uint32(elf.R_X86_64_GOTPCREL), 0x1000, 0xdead, -4, 0x3000); err != nil || int32(binary.LittleEndian.Uint32(buf)) != 0x3000-4-0x1000 {
		t.Errorf("GOTPCREL goes to the slot: %v", err)
	}
}

type mem map[uint64]uint64

func (m mem) ReadMem(addr uint64, b []byte) error {
	binary.LittleEndian.PutUint64(b, m[addr])
	return nil
}

func TestObserve(t *testing.T) {
	put := func(b []byte, off int, v int32) { binary.LittleEndian.PutUint32(b[off:], uint32(v)) }
	// call rel32 at p=0x1001 to 0x5000: PLT32, addend -4
	pre := []byte{0xe8, 0, 0, 0, 0}
	run := append([]byte{}, pre...)
	put(run, 1, 0x5000-4-0x1001)
	if s, rw, err := Observe(pre, run, 1, uint32(elf.R_X86_64_PLT32), 0x1001, -4, nil); err != nil || s != 0x5000 || rw != 0 {
		t.Errorf("PLT32: %#x %d %v", s, rw, err)
	}
	// mov foo@GOTPCREL(%rip),%rax kept: read the slot
	pre = []byte{0x48, 0x8b, 0x05, 0, 0, 0, 0}
	run = append([]byte{}, pre...)
	put(run, 3, 0x8000-4-0x2003)
	m := mem{0x8000: 0x7777}
	if s, rw, err := Observe(pre, run, 3, uint32(elf.R_X86_64_REX_GOTPCRELX), 0x2003, -4, m); err != nil || s != 0x7777 || rw != 0 {
		t.Errorf("GOT kept: %#x %d %v", s, rw, err)
	}
	// relaxed by the linker to lea foo(%rip),%rax
	run[1] = 0x8d
	put(run, 3, 0x6000-4-0x2003)
	if s, rw, err := Observe(pre, run, 3, uint32(elf.R_X86_64_REX_GOTPCRELX), 0x2003, -4, m); err != nil || s != 0x6000 || rw != 2 {
		t.Errorf("GOT relaxed to lea: %#x %d %v", s, rw, err)
	}
	// relaxed to mov $foo,%rax (non-PIE)
	run[1], run[2] = 0xc7, 0xc0
	put(run, 3, 0x401000)
	if s, rw, err := Observe(pre, run, 3, uint32(elf.R_X86_64_REX_GOTPCRELX), 0x2003, -4, m); err != nil || s != 0x401000 || rw != 2 {
		t.Errorf("GOT relaxed to mov imm: %#x %d %v", s, rw, err)
	}
	// rewritten in a way nobody does
	run[1], run[2] = 0x90, 0x90
	if _, _, err := Observe(pre, run, 3, uint32(elf.R_X86_64_REX_GOTPCRELX), 0x2003, -4, m); err == nil {
		t.Error("unknown rewrite accepted")
	}
}
