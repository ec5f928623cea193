package amd64

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"
)

// target decodes the PC-relative target of the instruction at the start of b
// running at addr.
func target(t *testing.T, b []byte, addr uint64) uint64 {
	t.Helper()
	inst, err := x86asm.Decode(b, 64)
	if err != nil {
		t.Fatal(err)
	}
	var d int64
	switch inst.PCRel {
	case 1:
		d = int64(int8(b[inst.PCRelOff]))
	case 4:
		d = int64(int32(binary.LittleEndian.Uint32(b[inst.PCRelOff:])))
	default:
		t.Fatalf("no PC-relative field in % x", b)
	}
	return uint64(int64(addr) + int64(inst.Len) + d)
}

func TestRelocateKeepsTargets(t *testing.T) {
	const from, to = 0x401000, 0x10000000
	cases := map[string][]byte{
		"lea rip":   {0x48, 0x8d, 0x05, 0x10, 0, 0, 0}, // lea 0x10(%rip),%rax
		"call":      {0xe8, 0x00, 0x01, 0, 0},          // call +0x100
		"jmp short": {0xeb, 0x10},                      // jmp +0x10
		"jcc short": {0x74, 0xf0},                      // je -0x10
		"cmp rip":   {0x83, 0x3d, 0x20, 0, 0, 0, 0x05}, // cmpl $5,0x20(%rip)
		"plain":     {0x55},                            // push %rbp
	}
	for name, code := range cases {
		out, err := Relocate(code, from, to)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if name == "plain" {
			if string(out) != string(code) {
				t.Errorf("plain instruction changed: % x", out)
			}
			continue
		}
		if got, want := target(t, out, to), target(t, code, from); got != want {
			t.Errorf("%s: target %#x after relocation, want %#x (% x)", name, got, want, out)
		}
	}
	if _, err := Relocate([]byte{0xe3, 0x10}, from, to); !errors.Is(err, ErrNotSpliceable) { // jrcxz
		t.Errorf("jrcxz: %v", err)
	}
}

func TestDisplacedAndBranchesInto(t *testing.T) {
	// push %rbp; mov %rsp,%rbp; sub $0x10,%rsp; ...
	code := []byte{0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x10, 0xc3}
	if n, err := Displaced(code, 5); err != nil || n != 8 {
		t.Fatalf("Displaced = %d, %v; want 8", n, err)
	}
	if _, err := Displaced([]byte{0x31, 0xc0, 0xc3}, 5); !errors.Is(err, ErrNotSpliceable) {
		t.Fatalf("3-byte function: %v", err)
	}
	// a loop back to +1, inside the bytes a jump would cover
	loop := []byte{0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0xeb, 0xf9, 0xc3}
	if off, ok := BranchesInto(loop, 0x1000, 0, 5); !ok || off != 6 {
		t.Fatalf("BranchesInto = %d, %v", off, ok)
	}
	if _, ok := BranchesInto(code, 0x1000, 0, 5); ok {
		t.Fatal("false branch found")
	}
}

func TestGateStub(t *testing.T) {
	const at, flag, newFn, orig = 0x7000, 0x8000, 0x9000, 0x1000
	disp := []byte{0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x10}
	b, err := GateStub(at, flag, newFn, orig, disp)
	if err != nil {
		t.Fatal(err)
	}
	if got := target(t, b, at); got != flag {
		t.Errorf("cmp reads %#x, want the flag %#x", got, flag)
	}
	if got := target(t, b[7:], at+7); got != newFn {
		t.Errorf("jne goes to %#x, want %#x", got, newFn)
	}
	if string(b[13:21]) != string(disp) {
		t.Errorf("displaced instructions changed: % x", b[13:21])
	}
	if got, ok := JumpTarget(at+21, b[21:]); !ok || got != orig+8 {
		t.Errorf("jump back to %#x, want %#x", got, orig+8)
	}
}

func TestIndirectGateStub(t *testing.T) {
	const at, ptr, newFn, orig = 0x7000, 0x8000, 0x9000, 0x1000
	disp := []byte{0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x10}
	b, err := IndirectGateStub(at, ptr, newFn, orig, disp)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"PUSH RAX", "MOV RAX, [RIP+", "CMP ", "POP RAX", "JNE "}
	off := 0
	for _, w := range want {
		inst, err := x86asm.Decode(b[off:], 64)
		if err != nil || !strings.HasPrefix(inst.String(), w) {
			t.Fatalf("+%d: %v %v, want %s", off, inst, err, w)
		}
		off += inst.Len
	}
	if got := target(t, b[1:], at+1); got != ptr {
		t.Errorf("mov reads %#x, want the pointer slot %#x", got, ptr)
	}
	if got := target(t, b[12:], at+12); got != newFn {
		t.Errorf("jne goes to %#x, want %#x", got, newFn)
	}
	if string(b[18:26]) != string(disp) {
		t.Errorf("displaced instructions changed: % x", b[18:26])
	}
	if got, ok := JumpTarget(at+26, b[26:]); !ok || got != orig+8 {
		t.Errorf("jump back to %#x, want %#x", got, orig+8)
	}
}

func TestShortEntry(t *testing.T) {
	ret3 := []byte{0x89, 0xf8, 0xc3} // mov %edi,%eax; ret
	cases := []struct {
		name string
		code []byte
		size int
		want int // 0: refused
	}{
		{"multi-byte nop", append(ret3, 0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0, 0x66, 0x90), 3, 14},
		{"nops", append(ret3, 0x90, 0x90, 0x90), 3, 5},
		{"int3", append(ret3, 0xcc, 0xcc), 3, 5},
		{"xchg ax", append(ret3, 0x66, 0x90), 3, 5},
		{"no room", ret3, 3, 0},
		{"too little", append(ret3, 0x90), 3, 0},
		{"code after", append(ret3, 0x8d, 0x04, 0x3f, 0xc3), 3, 0},
		{"zeros", append(ret3, 0, 0, 0), 3, 0},
		{"falls through", []byte{0x89, 0xf8, 0x90, 0x90, 0x90, 0x90}, 2, 0},
		{"indirect call", []byte{0xff, 0xd7, 0x90, 0x90, 0x90, 0x90}, 2, 0},
		{"tail jump", []byte{0xff, 0xe7, 0x90, 0x90, 0x90, 0x90}, 2, 5},
	}
	for _, c := range cases {
		n, err := ShortEntry(append([]byte{}, c.code...), c.size, NearJumpSize)
		if c.want == 0 {
			if !errors.Is(err, ErrNotSpliceable) {
				t.Errorf("%s: got %d, %v; want a refusal", c.name, n, err)
			}
			continue
		}
		if err != nil || n != c.want {
			t.Errorf("%s: got %d, %v; want %d", c.name, n, err, c.want)
		}
	}
}

func TestPadding(t *testing.T) {
	ret := []byte{0x89, 0xf8, 0xc3} // mov %edi,%eax; ret
	nop7 := []byte{0x0f, 0x1f, 0x80, 0, 0, 0, 0}
	endbrJmp := []byte{0xf3, 0x0f, 0x1e, 0xfa, 0xe9, 0x77, 0xff, 0xff, 0xff}
	cases := []struct {
		name    string
		before  []byte
		symSize int
		want    int // -1: refused
	}{
		{"after ret", append(append([]byte{}, ret...), nop7...), 3, 7},
		{"unsized symbol", append(append([]byte{}, endbrJmp...), nop7...), 0, 7},
		{"int3", append(append([]byte{}, ret...), 0xcc, 0xcc, 0xcc, 0xcc, 0xcc), 3, 5},
		{"no padding", ret, 3, 0},
		{"call before", append([]byte{0xe8, 0, 0, 0, 0}, nop7...), 5, -1},
		{"falls through", append([]byte{0x89, 0xf8}, nop7...), 2, -1},
		{"code after size", append(append(append([]byte{}, ret...), 0x89, 0xf8, 0xc3), nop7...), 3, -1},
		{"branch into it", append([]byte{0x74, 0x03, 0xc3}, nop7...), 3, -1},
		{"only filler", nop7, 0, -1},
	}
	for _, c := range cases {
		n, err := Padding(c.before, 0x1000, c.symSize)
		if c.want < 0 {
			if err == nil {
				t.Errorf("%s: got %d, want a refusal", c.name, n)
			}
			continue
		}
		if err != nil || n != c.want {
			t.Errorf("%s: got %d, %v; want %d", c.name, n, err, c.want)
		}
	}
}

func TestPaddedEntry(t *testing.T) {
	// 7 bytes of padding, then the function at 0x1007.
	orig := []byte{0x0f, 0x1f, 0x80, 0, 0, 0, 0, 0x89, 0xf8}
	j, err := PaddedEntry(orig, 0x1002, 0x1007, 0x2000)
	if err == nil {
		t.Fatalf("length mismatch accepted: % x", j)
	}
	j, err = PaddedEntry(orig[2:], 0x1002, 0x1007, 0x2000)
	if err != nil {
		t.Fatal(err)
	}
	if to, ok := JumpTarget(0x1002, j); !ok || to != 0x2000 {
		t.Errorf("jump at the padding: % x", j)
	}
	if j[5] != 0xeb || int8(j[6]) != -7 {
		t.Errorf("entry: % x, want eb f9", j[5:])
	}
	if _, err := PaddedEntry(make([]byte, 200+2), 0x1000, 0x1000+200, 0x2000); !errors.Is(err, ErrNotSpliceable) {
		t.Errorf("out of a rel8's reach: %v", err)
	}
}

func TestCopyFunction(t *testing.T) {
	// xor %edx,%edx; L: add $1,%edx; call out; cmp $3,%edx; jne L; ret
	code := []byte{0x31, 0xd2, 0x83, 0xc2, 0x01, 0xe8, 0, 0, 0, 0, 0x83, 0xfa, 0x03, 0x75, 0xf3, 0xc3}
	const from, to, out = 0x1000, 0x5000, 0x1000 + 10 + 0x100
	code[6] = 0x00
	code[7] = 0x01 // call rel32 0x100: to from+10+0x100
	cp, err := CopyFunction(code, from, to)
	if err != nil {
		t.Fatal(err)
	}
	if got := to + 10 + uint64(int32(binary.LittleEndian.Uint32(cp[6:]))); got != out {
		t.Errorf("call from the copy reaches %#x, want %#x", got, out)
	}
	if !bytes.Equal(cp[:5], code[:5]) || !bytes.Equal(cp[10:], code[10:]) {
		t.Errorf("branch inside the function changed: % x", cp)
	}
	for name, bad := range map[string][]byte{
		"short jump out": {0xeb, 0x10, 0xc3},
		"jump table":     {0xff, 0xe0},                   // jmp *%rax
		"table in data":  {0xff, 0x24, 0xc5, 0, 0, 0, 0}, // jmp *0(,%rax,8)
	} {
		if _, err := CopyFunction(bad, from, to); !errors.Is(err, ErrNotSpliceable) {
			t.Errorf("%s: %v, want a refusal", name, err)
		}
	}
	// A tail call through the GOT is no jump table.
	if _, err := CopyFunction([]byte{0xff, 0x25, 0, 0, 0, 0}, from, to); err != nil {
		t.Errorf("jmp *slot(%%rip): %v", err)
	}
}
