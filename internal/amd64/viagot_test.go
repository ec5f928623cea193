package amd64

import (
	"debug/elf"
	"encoding/binary"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"
)

// disasm decodes b (running at addr) into GNU syntax, one instruction a line.
func disasm(t *testing.T, b []byte, addr uint64) string {
	t.Helper()
	var out []string
	for off := 0; off < len(b); {
		inst, err := x86asm.Decode(b[off:], 64)
		if err != nil {
			t.Fatalf("decode % x at +%d: %v", b, off, err)
		}
		out = append(out, x86asm.GNUSyntax(inst, addr+uint64(off), nil))
		off += inst.Len
	}
	return strings.Join(out, "; ")
}

func TestViaGOT(t *testing.T) {
	const addr, got, thunk = 0x7000_0000, 0x7000_2000, 0x7000_1000
	// Each instruction starts at +1 (after a nop) and refers to sym+k with
	// its field at +1+pre; the addend is k-4.
	cases := []struct {
		name   string
		code   []byte
		pre    int
		k      int64
		inst   string // the instruction afterwards
		thunk  string // "" for an in-place rewrite
		refuse bool
	}{
		{name: "mov64", code: []byte{0x48, 0x8b, 0x3d}, pre: 3,
			inst: "jmpq 0x70001000; nop; nop", thunk: "mov 0xff9(%rip),%rdi; mov (%rdi),%rdi; jmpq 0x70000008"},
		{name: "mov32", code: []byte{0x8b, 0x05}, pre: 2, k: 8,
			inst: "jmpq 0x70001000; nop", thunk: "mov 0xff9(%rip),%rax; mov 0x8(%rax),%eax; jmpq 0x70000007"},
		{name: "r12", code: []byte{0x4c, 0x8b, 0x25}, pre: 3,
			inst: "jmpq 0x70001000; nop; nop", thunk: "mov 0xff9(%rip),%r12; mov (%r12,%riz),%r12; jmpq 0x70000008"},
		{name: "r13d", code: []byte{0x44, 0x8b, 0x2d}, pre: 3,
			inst: "jmpq 0x70001000; nop; nop", thunk: "mov 0xff9(%rip),%r13; mov (%r13),%r13d; jmpq 0x70000008"},
		{name: "lea", code: []byte{0x48, 0x8d, 0x35}, pre: 3,
			inst: "mov 0x1ff8(%rip),%rsi"},
		{name: "store", code: []byte{0x48, 0x89, 0x05}, pre: 3, refuse: true},
		{name: "cmp imm", code: []byte{0x83, 0x3d}, pre: 2, refuse: true},
	}
	for _, c := range cases {
		code := append([]byte{0x90}, c.code...)
		var f [4]byte
		code = append(code, f[:]...)
		if c.name == "cmp imm" {
			code = append(code, 5)
		}
		code = append(code, 0xc3)
		th, err := ViaGOT(code, addr, 1+c.pre, c.k-4, got, thunk)
		if c.refuse {
			if err == nil {
				t.Errorf("%s: rewritten, want refusal", c.name)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := disasm(t, code[1:len(code)-1], addr+1); got != c.inst {
			t.Errorf("%s: instruction %q, want %q", c.name, got, c.inst)
		}
		if c.thunk == "" {
			if th != nil {
				t.Errorf("%s: thunk for an in-place rewrite", c.name)
			}
			continue
		}
		if len(th) > ThunkSize {
			t.Errorf("%s: thunk of %d bytes", c.name, len(th))
		}
		if got := disasm(t, th, thunk); got != c.thunk {
			t.Errorf("%s: thunk %q, want %q", c.name, got, c.thunk)
		}
		// The GOT load reads the slot.
		if d := int64(int32(binary.LittleEndian.Uint32(th[3:]))); uint64(thunk+7+d) != got {
			t.Errorf("%s: thunk reads %#x, want the slot %#x", c.name, thunk+7+d, got)
		}
	}
}

// region is memory for Observe: bytes at addresses.
type region map[uint64]byte

func (m region) ReadMem(addr uint64, b []byte) error {
	for i := range b {
		b[i] = m[addr+uint64(i)]
	}
	return nil
}

func (m region) put(addr uint64, b []byte) {
	for i, c := range b {
		m[addr+uint64(i)] = c
	}
}

// A stacked update's pre code still has the direct reference that ViaGOT
// rewrote in the running code: Observe accepts exactly that rewrite.
func TestObserveViaGOT(t *testing.T) {
	const fn, got, thunk, sym = 0x7000_0000, 0x7000_2000, 0x7000_1000, 0x7fff_1234_5000
	pc32 := uint32(elf.R_X86_64_PC32)
	for _, c := range []struct {
		name      string
		pre       []byte
		rewritten int
	}{
		{"mov", []byte{0x90, 0x48, 0x8b, 0x3d, 0, 0, 0, 0, 0xc3}, 3},
		{"lea", []byte{0x90, 0x48, 0x8d, 0x35, 0, 0, 0, 0, 0xc3}, 2},
	} {
		run := append([]byte{}, c.pre...)
		th, err := ViaGOT(run, fn, 4, -4, got, thunk)
		if err != nil {
			t.Fatal(err)
		}
		m := region{}
		m.put(thunk, th)
		var slot [8]byte
		binary.LittleEndian.PutUint64(slot[:], sym)
		m.put(got, slot[:])
		s, rw, err := Observe(c.pre, run, 4, pc32, fn+4, -4, m)
		if err != nil || s != sym || rw != c.rewritten {
			t.Errorf("%s: got %#x %d %v, want %#x %d", c.name, s, rw, err, uint64(sym), c.rewritten)
		}
		// Anything else there is not taken for it.
		if c.name == "mov" {
			bad := append([]byte{}, run...)
			bad[8] = 0xcc
			m.put(thunk+uint64(len(th))-1, []byte{0x00})
			if s, _, err := Observe(c.pre, bad, 4, pc32, fn+4, -4, m); err == nil && s == sym {
				t.Errorf("%s: a changed thunk still matched", c.name)
			}
		}
	}
}

func TestJumpsOut(t *testing.T) {
	const addr = 0x1000
	// jmp +0 (inside), jmp to 0x2000 (out), je rel8 (inside), ret
	code := []byte{0xe9, 0, 0, 0, 0, 0xe9, 0, 0, 0, 0, 0x74, 0x00, 0xc3}
	binary.LittleEndian.PutUint32(code[6:], uint32(0x2000-(addr+10)))
	if got := JumpsOut(code, addr); len(got) != 1 || got[0] != 0x2000 {
		t.Errorf("JumpsOut = %#x, want [0x2000]", got)
	}
}
