package amd64

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"livesplice/internal/unwind"
)

// stubProg runs a preserving stub for real: callit loads known values into
// call-clobbered registers and calls the stub, which calls target; target
// writes every one of them and unwinds its stack with glibc's backtrace()
// through the stub (its .eh_frame handed to libgcc with __register_frame)
// to callit. The program prints the registers callit found after the call
// and whether the unwinder got through.
const stubProg = `#define _GNU_SOURCE
#include <execinfo.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

extern void __register_frame(void *);
extern void callit(void *stub, long *out);
extern char callit_end[];
asm(".globl callit\n.type callit,@function\ncallit:\n.cfi_startproc\n"
    "push %rbx\n.cfi_adjust_cfa_offset 8\n.cfi_offset rbx,-16\n"
    "mov %rdi,%rax\nmov %rsi,%rbx\n"
    "mov $41,%rdi\nmov $0x1111,%rcx\nmov $0x2222,%rdx\nmov $0x3333,%rsi\nmov $0x8888,%r8\n"
    "mov $0x9999,%r9\nmov $0xaaaa,%r10\nmov $0xbbbb,%r11\nmovq %rcx,%xmm2\nmovq %rdx,%xmm15\n"
    "call *%rax\n"
    "mov %rax,0(%rbx)\nmov %rcx,8(%rbx)\nmov %rdx,16(%rbx)\nmov %rsi,24(%rbx)\nmov %r8,32(%rbx)\n"
    "mov %r9,40(%rbx)\nmov %r10,48(%rbx)\nmov %r11,56(%rbx)\nmovq %xmm2,64(%rbx)\nmovq %xmm15,72(%rbx)\nmov %rdi,80(%rbx)\n"
    "pop %rbx\n.cfi_adjust_cfa_offset -8\nret\n.cfi_endproc\n.globl callit_end\ncallit_end:\n");

static int through;

__attribute__((noinline)) long target(long a)
{
	void *bt[16];
	int n = backtrace(bt, 16);
	for (int i = 0; i < n; i++)
		if ((char *)bt[i] > (char *)callit && (char *)bt[i] <= callit_end)
			through = 1;
	asm volatile("mov $-1,%%rcx\n mov $-1,%%rdx\n mov $-1,%%rsi\n mov $-1,%%rdi\n mov $-1,%%r8\n mov $-1,%%r9\n"
		"mov $-1,%%r10\n mov $-1,%%r11\n pcmpeqd %%xmm2,%%xmm2\n pcmpeqd %%xmm15,%%xmm15\n"
		::: "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "xmm2", "xmm15");
	return a + 1;
}

static unsigned char code[] = {CODE};
static unsigned char frame[] = {FRAME};

int main(void)
{
	/* Within rel32 reach of target. */
	void *hint = (void *)(((unsigned long)target & ~0xfffUL) - (16UL << 20));
	unsigned char *m = mmap(hint, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (m == MAP_FAILED)
		return 1;
	memcpy(m, code, sizeof code);
	int rel = (int)((char *)target - (char *)(m + CALLFIELD + 4));
	memcpy(m + CALLFIELD, &rel, 4);
	unsigned char *eh = m + 2048;
	memcpy(eh, frame, sizeof frame);
	int pc = (int)((char *)m - (char *)(eh + PCFIELD));
	memcpy(eh + PCFIELD, &pc, 4);
	__register_frame(eh);
	long out[11];
	callit(m, out);
	printf("rax=%lx rcx=%lx rdx=%lx rsi=%lx r8=%lx r9=%lx r10=%lx r11=%lx xmm2=%lx xmm15=%lx rdi=%lx through=%d\n",
		out[0], out[1], out[2], out[3], out[4], out[5], out[6], out[7], out[8], out[9], out[10], through);
	return 0;
}
`

func TestPreservingStubRuns(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no gcc")
	}
	// Everything call-clobbered but rax (the return value).
	st := NewPreservingStub([]int{1, 2, 6, 7, 8, 9, 10, 11}, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	bytesC := func(b []byte) string {
		var s []string
		for _, c := range b {
			s = append(s, fmt.Sprint(c))
		}
		return strings.Join(s, ",")
	}
	src := strings.NewReplacer("{CODE}", "{"+bytesC(st.Code)+"}", "{FRAME}", "{"+bytesC(st.Frame)+"}",
		"CALLFIELD", fmt.Sprint(st.CallField), "PCFIELD", fmt.Sprint(st.FramePCField)).Replace(stubProg)
	dir := t.TempDir()
	if d := os.Getenv("STUBDBG"); d != "" {
		dir = d
	}
	if err := os.WriteFile(filepath.Join(dir, "p.c"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "p")
	if out, err := exec.Command("gcc", "-O2", "-o", bin, filepath.Join(dir, "p.c"), "-lgcc_s").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := "rax=2a rcx=1111 rdx=2222 rsi=3333 r8=8888 r9=9999 r10=aaaa r11=bbbb xmm2=1111 xmm15=2222 rdi=29 through=1\n"
	if string(out) != want {
		t.Errorf("got  %swant %s", out, want)
	}
}

// Odd and even numbers of general registers keep %rsp 16-aligned at the
// call; the frame's FDE covers the code.
func TestPreservingStubShape(t *testing.T) {
	for _, c := range []struct{ gprs, xmms []int }{{nil, nil}, {[]int{1}, nil}, {[]int{1, 2}, []int{3}}, {[]int{8, 9, 10}, []int{0, 15}}} {
		st := NewPreservingStub(c.gprs, c.xmms)
		depth := 8 * (1 + len(c.gprs))
		if c := st.Code[st.CallField-1]; c != 0xe8 {
			t.Fatalf("%v: no call before the field: %#x", c, c)
		}
		// sub $n,%rsp follows the pushes when there is one.
		at := 0
		for _, r := range c.gprs {
			at++
			if r >= 8 {
				at++
			}
		}
		if len(st.Code) > at+7 && st.Code[at] == 0x48 && st.Code[at+1] == 0x81 && st.Code[at+2] == 0xec {
			depth += int(binary.LittleEndian.Uint32(st.Code[at+3:]))
		}
		if depth%16 != 0 {
			t.Errorf("%v %v: %d bytes pushed before the call: misaligned", c.gprs, c.xmms, depth)
		}
		if st.Code[len(st.Code)-1] != 0xc3 {
			t.Errorf("%v %v: does not end in ret", c.gprs, c.xmms)
		}
		if got := binary.LittleEndian.Uint32(st.Frame[st.FramePCField+4:]); int(got) != len(st.Code) {
			t.Errorf("FDE covers %d bytes, code is %d", got, len(st.Code))
		}
		// The safety check's own unwinder reads it.
		if err := unwind.New(0, nil, nil).AddFrames("stub", 0x10000, 0x10000+uint64(len(st.Code)), st.Frame, 0x20000); err != nil {
			t.Errorf("%v %v: %v", c.gprs, c.xmms, err)
		}
	}
}
