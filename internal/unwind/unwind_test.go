package unwind

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"livesplice/internal/procfs"
)

// The tests run real C programs: each thread blocks in read() on a pipe the
// test never writes to, the test stops the threads with PTRACE_ATTACH and
// unwinds them from their registers and /proc/PID/mem.

// procMem reads a process's memory through /proc/PID/mem.
type procMem struct{ f *os.File }

func (m procMem) ReadMem(addr uint64, b []byte) error {
	if addr > 1<<63-1 {
		return fmt.Errorf("address %#x out of range", addr)
	}
	n, err := m.f.ReadAt(b, int64(addr))
	if n == len(b) {
		return nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func openMem(t *testing.T, pid int) procMem {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return procMem{f}
}

// compile builds a C program in a temporary directory.
func compile(t *testing.T, src string, flags ...string) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not found")
	}
	dir := t.TempDir()
	c := filepath.Join(dir, "prog.c")
	bin := filepath.Join(dir, "prog")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append(append([]string{}, flags...), "-g", "-o", bin, c)
	if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %v: %v\n%s", args, err, out)
	}
	return bin
}

// start runs bin with its stdin a pipe nobody writes to, and kills it when
// the test ends.
func start(t *testing.T, bin string) int {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Stdin = r
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		unix.Kill(pid, unix.SIGKILL)
		cmd.Wait()
		w.Close()
	})
	return pid
}

// waitBlocked waits until pid has n threads, all blocked in read(2), and
// returns their ids.
func waitBlocked(t *testing.T, pid, n int) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		tids, err := procfs.Tasks(pid)
		if err != nil {
			t.Fatal(err)
		}
		blocked := 0
		for _, tid := range tids {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", pid, tid))
			if err == nil && strings.HasPrefix(string(b), "0 ") { // read
				blocked++
			}
		}
		if len(tids) == n && blocked == n {
			return tids
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d: %d threads, %d blocked in read, want %d", pid, len(tids), blocked, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stop attaches to the threads tids with ptrace, from one locked OS thread
// (ptrace requests must come from the tracer thread), and returns their
// registers. The threads are detached when the test ends.
func stop(t *testing.T, tids []int) map[int]*unix.PtraceRegs {
	t.Helper()
	type result struct {
		regs map[int]*unix.PtraceRegs
		err  error
	}
	res := make(chan result)
	release := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Never unlocked: the thread exits with the goroutine, which also
		// ends any ptrace relationship left over.
		runtime.LockOSThread()
		var attached []int
		defer func() {
			for _, tid := range attached {
				unix.PtraceDetach(tid)
			}
		}()
		regs := map[int]*unix.PtraceRegs{}
		err := func() error {
			for _, tid := range tids {
				if err := unix.PtraceAttach(tid); err != nil {
					return fmt.Errorf("attach %d: %w", tid, err)
				}
				attached = append(attached, tid)
				var ws unix.WaitStatus
				for {
					_, err := unix.Wait4(tid, &ws, unix.WALL, nil)
					if err == unix.EINTR {
						continue
					}
					if err != nil {
						return fmt.Errorf("wait %d: %w", tid, err)
					}
					break
				}
				if !ws.Stopped() {
					return fmt.Errorf("thread %d: wait status %#x", tid, ws)
				}
			}
			for _, tid := range tids {
				var r unix.PtraceRegs
				if err := unix.PtraceGetRegs(tid, &r); err != nil {
					return fmt.Errorf("getregs %d: %w", tid, err)
				}
				regs[tid] = &r
			}
			return nil
		}()
		res <- result{regs, err}
		<-release
	}()
	r := <-res
	t.Cleanup(func() { close(release); <-done })
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.regs
}

// symbolizer names code addresses of a process from the ELF symbol tables
// of its mapped files.
type symbolizer struct {
	maps []procfs.Mapping
	mods map[string]*symMod
}

type symMod struct {
	bias uint64
	syms []elf.Symbol
}

func newSymbolizer(t *testing.T, pid int) *symbolizer {
	maps, err := procfs.ReadMaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	return &symbolizer{maps: maps, mods: map[string]*symMod{}}
}

func (s *symbolizer) mapping(pc uint64) (procfs.Mapping, bool) {
	for _, m := range s.maps {
		if m.Contains(pc) {
			return m, true
		}
	}
	return procfs.Mapping{}, false
}

// path returns the file mapped at pc.
func (s *symbolizer) path(pc uint64) string {
	m, _ := s.mapping(pc)
	return m.Path
}

// name returns the function containing pc ("" if unknown).
func (s *symbolizer) name(pc uint64) string {
	m, ok := s.mapping(pc)
	if !ok || !strings.HasPrefix(m.Path, "/") {
		return ""
	}
	mod := s.mods[m.Path]
	if mod == nil {
		mod = &symMod{}
		s.mods[m.Path] = mod
		f, err := elf.Open(m.Path)
		if err != nil {
			return ""
		}
		defer f.Close()
		syms, _ := f.Symbols()
		dyn, _ := f.DynamicSymbols()
		for _, sym := range append(syms, dyn...) {
			if elf.ST_TYPE(sym.Info) == elf.STT_FUNC && sym.Size > 0 {
				mod.syms = append(mod.syms, sym)
			}
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_LOAD {
				for _, b := range s.maps {
					if b.Path == m.Path && b.Offset == 0 {
						mod.bias = b.Start - p.Vaddr&^0xfff
						break
					}
				}
				break
			}
		}
	}
	for _, sym := range mod.syms {
		if pc-mod.bias >= sym.Value && pc-mod.bias < sym.Value+sym.Size {
			return sym.Name
		}
	}
	return ""
}

// describe names each frame's function, looking return addresses up at
// pc-1 as the unwinder does.
func (s *symbolizer) describe(frames []Frame) []string {
	var names []string
	for i, f := range frames {
		pc := f.PC
		if i > 0 {
			pc--
		}
		names = append(names, s.name(pc))
	}
	return names
}

func (s *symbolizer) dump(frames []Frame) string {
	var b strings.Builder
	for i, f := range s.describe(frames) {
		fmt.Fprintf(&b, "  #%d pc=%#x cfa=%#x %s (%s)\n", i, frames[i].PC, frames[i].CFA, f, filepath.Base(s.path(frames[i].PC)))
	}
	return b.String()
}

// hasChain reports whether names contains want as consecutive elements.
func hasChain(names, want []string) bool {
	for i := 0; i+len(want) <= len(names); i++ {
		if slices.Equal(names[i:i+len(want)], want) {
			return true
		}
	}
	return false
}

func isLibc(path string) bool { return strings.Contains(filepath.Base(path), "libc.so") }

// newUnwinder makes an Unwinder for pid from its current memory map.
func newUnwinder(t *testing.T, pid int) *Unwinder {
	maps, err := procfs.ReadMaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	return New(pid, maps, openMem(t, pid))
}

const chainSrc = `
#include <unistd.h>
#define NI __attribute__((noinline, noclone))
volatile int sink;
/* Using each callee's result afterwards keeps gcc from turning the calls
   into tail calls, which would drop frames. */
NI void c(void) { char b; sink += read(0, &b, 1); }
NI void b(void) { c(); sink++; }
NI void a(void) { b(); sink++; }
int main(void) { a(); sink++; return 0; }
`

func TestUnwindChain(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
	}{
		{"pie-O2", []string{"-O2", "-fPIE", "-pie"}},
		{"nopie-O0", []string{"-O0", "-fno-pie", "-no-pie"}},
		{"omit-fp-O2", []string{"-O2", "-fomit-frame-pointer"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := compile(t, chainSrc, tc.flags...)
			pid := start(t, bin)
			tids := waitBlocked(t, pid, 1)
			regs := stop(t, tids)[pid]
			u := newUnwinder(t, pid)
			sym := newSymbolizer(t, pid)

			frames, err := u.Unwind(regs, 0)
			t.Logf("frames:\n%s", sym.dump(frames))
			if err != nil {
				t.Fatalf("Unwind: %v", err)
			}
			names := sym.describe(frames)
			if !hasChain(names, []string{"c", "b", "a", "main"}) {
				t.Errorf("frames %q lack the chain c, b, a, main", names)
			}
			if !isLibc(sym.path(frames[0].PC)) {
				t.Errorf("frame 0 at %#x is in %q, want libc (blocked in read)", frames[0].PC, sym.path(frames[0].PC))
			}
			if names[len(names)-1] != "_start" {
				t.Errorf("last frame is %q, want _start", names[len(names)-1])
			}
			// Between main and _start: __libc_start_call_main and
			// __libc_start_main, unwound with libc's CFI.
			i := slices.Index(names, "main")
			if i < 0 || i+1 >= len(frames) || !isLibc(sym.path(frames[i+1].PC)) {
				t.Errorf("no libc frame after main")
			}
			for i := 1; i < len(frames); i++ {
				if frames[i].CFA <= frames[i-1].CFA {
					t.Errorf("frame %d: CFA %#x not above %#x", i, frames[i].CFA, frames[i-1].CFA)
				}
			}

			// max bounds the walk without an error.
			short, err := u.Unwind(regs, 2)
			if err != nil || len(short) != 2 || short[1] != frames[1] {
				t.Errorf("Unwind(max 2) = %v, %v", short, err)
			}

			// StackWords holds the return address into b (pushed by b's
			// call to c) and the one into main.
			words, err := u.StackWords(regs)
			if err != nil {
				t.Fatalf("StackWords: %v", err)
			}
			for _, fn := range []string{"b", "main"} {
				k := slices.Index(names, fn)
				if k <= 0 || !slices.Contains(words, frames[k].PC) {
					t.Errorf("StackWords (%d words) lacks the return address into %s", len(words), fn)
				}
			}
		})
	}
}

func TestUnwindThreads(t *testing.T) {
	var src strings.Builder
	src.WriteString(`#include <pthread.h>
#include <unistd.h>
#define NI __attribute__((noinline, noclone))
volatile int sink;
NI void blockread(int k) { char b; sink += k + read(0, &b, 1); }
`)
	for i := range 4 {
		fmt.Fprintf(&src, `NI void t%[1]dc(void) { blockread(%[1]d); sink += 1; }
NI void t%[1]db(void) { t%[1]dc(); sink += 2; }
NI void t%[1]da(void) { t%[1]db(); sink += 3; }
NI void *th%[1]d(void *p) { t%[1]da(); sink += 4; return p; }
`, i)
	}
	src.WriteString(`int main(void) {
	pthread_t t[4];
	pthread_create(&t[0], 0, th0, 0);
	pthread_create(&t[1], 0, th1, 0);
	pthread_create(&t[2], 0, th2, 0);
	pthread_create(&t[3], 0, th3, 0);
	blockread(9);
	return 0;
}
`)
	bin := compile(t, src.String(), "-O2", "-pthread")
	pid := start(t, bin)
	tids := waitBlocked(t, pid, 5)
	regs := stop(t, tids)
	u := newUnwinder(t, pid)
	sym := newSymbolizer(t, pid)

	found := map[string]int{}
	for _, tid := range tids {
		frames, err := u.Unwind(regs[tid], 0)
		t.Logf("thread %d:\n%s", tid, sym.dump(frames))
		if err != nil {
			t.Errorf("thread %d: Unwind: %v", tid, err)
			continue
		}
		names := sym.describe(frames)
		if tid == pid {
			if !hasChain(names, []string{"blockread", "main"}) || names[len(names)-1] != "_start" {
				t.Errorf("main thread: frames %q", names)
			}
			continue
		}
		chain := false
		for i := range 4 {
			if hasChain(names, []string{"blockread", fmt.Sprintf("t%dc", i), fmt.Sprintf("t%db", i), fmt.Sprintf("t%da", i), fmt.Sprintf("th%d", i)}) {
				found[fmt.Sprint(i)]++
				chain = true
			}
		}
		if !chain {
			t.Errorf("thread %d: no thread chain in %q", tid, names)
		}
		// start_thread, then clone3 whose child side marks rip undefined.
		if last := frames[len(frames)-1].PC; !isLibc(sym.path(last)) {
			t.Errorf("thread %d: last frame %#x is not in libc", tid, last)
		}
	}
	for i := range 4 {
		if found[fmt.Sprint(i)] != 1 {
			t.Errorf("chain of th%d found %d times", i, found[fmt.Sprint(i)])
		}
	}
}

func TestUnwindSignalFrame(t *testing.T) {
	const src = `
#include <signal.h>
#include <unistd.h>
#define NI __attribute__((noinline, noclone))
volatile int sink;
NI void h2(void) { char b; sink += read(0, &b, 1); }
NI void handler(int sig) { h2(); sink += sig; }
NI void s2(void) { raise(SIGUSR1); sink++; }
NI void s1(void) { s2(); sink++; }
int main(void) {
	struct sigaction sa = {0};
	sa.sa_handler = handler;
	sigaction(SIGUSR1, &sa, 0);
	s1();
	return 0;
}
`
	bin := compile(t, src, "-O2")
	pid := start(t, bin)
	tids := waitBlocked(t, pid, 1)
	regs := stop(t, tids)[pid]
	u := newUnwinder(t, pid)
	sym := newSymbolizer(t, pid)
	frames, err := u.Unwind(regs, 0)
	t.Logf("frames:\n%s", sym.dump(frames))
	if err != nil {
		t.Fatalf("Unwind: %v", err)
	}
	names := sym.describe(frames)
	if !hasChain(names, []string{"h2", "handler"}) || !hasChain(names, []string{"s2", "s1", "main"}) {
		t.Errorf("frames %q lack h2, handler ... s2, s1, main", names)
	}
	if names[len(names)-1] != "_start" {
		t.Errorf("last frame is %q, want _start", names[len(names)-1])
	}
}

const jitSrc = `
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#define NI __attribute__((noinline, noclone))
volatile int sink;
NI void blocker(void) { char b; sink += read(0, &b, 1); }
int main(void) {
	/* sub $8,%rsp; movabs $blocker,%rax; call *%rax; add $8,%rsp; ret */
	unsigned char code[] = {0x48, 0x83, 0xec, 0x08, 0x48, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0,
		0xff, 0xd0, 0x48, 0x83, 0xc4, 0x08, 0xc3};
	void (*fn)(void) = blocker;
	memcpy(code + 6, &fn, 8);
	void *p = mmap(0, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 1;
	memcpy(p, code, sizeof code);
	((void (*)(void))p)();
	sink++;
	return 0;
}
`

func TestUnwindNoFDE(t *testing.T) {
	bin := compile(t, jitSrc, "-O2")
	pid := start(t, bin)
	tids := waitBlocked(t, pid, 1)
	regs := stop(t, tids)[pid]
	u := newUnwinder(t, pid)
	sym := newSymbolizer(t, pid)
	var jit procfs.Mapping
	for _, m := range sym.maps {
		if m.Perms == "rwxp" && m.Inode == 0 {
			jit = m
		}
	}
	if jit.Start == 0 {
		t.Fatal("no anonymous rwx mapping")
	}

	// blocker returns into the JIT page, which has no FDE.
	frames, err := u.Unwind(regs, 0)
	t.Logf("frames:\n%s", sym.dump(frames))
	if !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Unwind error = %v, want ErrIncomplete", err)
	}
	t.Logf("error: %v", err)
	names := sym.describe(frames)
	if len(frames) != 3 || names[1] != "blocker" || !jit.Contains(frames[2].PC) {
		t.Errorf("frames %q, want read, blocker, then the JIT page", names)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("%#x", frames[2].PC)) {
		t.Errorf("error %q does not name pc %#x", err, frames[2].PC)
	}

	// A thread whose own pc is in the JIT page.
	r := *regs
	r.Rip = jit.Start + 2
	frames, err = u.Unwind(&r, 0)
	if !errors.Is(err, ErrIncomplete) || len(frames) != 1 || frames[0].PC != r.Rip {
		t.Errorf("Unwind at rip in JIT page = %v, %v; want one frame and ErrIncomplete", frames, err)
	}
	// And in no mapping at all.
	r.Rip = 8
	if _, err := u.Unwind(&r, 0); !errors.Is(err, ErrIncomplete) {
		t.Errorf("Unwind at rip 8: %v, want ErrIncomplete", err)
	}
}

// Code in anonymous memory whose call frame information is given with
// AddFrames (as livesplice does for its patches) unwinds through to main.
func TestUnwindAddFrames(t *testing.T) {
	bin := compile(t, jitSrc, "-O2")
	pid := start(t, bin)
	tids := waitBlocked(t, pid, 1)
	regs := stop(t, tids)[pid]
	sym := newSymbolizer(t, pid)
	var jit procfs.Mapping
	for _, m := range sym.maps {
		if m.Perms == "rwxp" && m.Inode == 0 {
			jit = m
		}
	}
	if jit.Start == 0 {
		t.Fatal("no anonymous rwx mapping")
	}
	// CIE: zR, code 1, data -8, RA r16, FDE pointers pcrel|sdata4;
	// CFA = rsp+8, RA at CFA-8. FDE for the 21 bytes of JIT code: after
	// the sub (4 bytes) CFA = rsp+16, after the add (at 20) rsp+8 again.
	ehAddr := jit.Start + 0x800 // anywhere within reach of the code
	eh := []byte{20, 0, 0, 0, 0, 0, 0, 0, 1, 'z', 'R', 0, 1, 0x78, 0x10, 1, 0x1b, 0x0c, 0x07, 0x08, 0x90, 0x01, 0, 0,
		20, 0, 0, 0, 28, 0, 0, 0, 0, 0, 0, 0, 21, 0, 0, 0, 0, 0x44, 0x0e, 0x10, 0x50, 0x0e, 0x08, 0,
		0, 0, 0, 0}
	binary.LittleEndian.PutUint32(eh[32:], uint32(int32(int64(jit.Start)-int64(ehAddr+32))))

	u := newUnwinder(t, pid)
	if err := u.AddFrames("jit", jit.Start, jit.Start+21, eh, ehAddr); err != nil {
		t.Fatal(err)
	}
	frames, err := u.Unwind(regs, 0)
	t.Logf("frames:\n%s", sym.dump(frames))
	if err != nil {
		t.Fatalf("Unwind: %v", err)
	}
	names := sym.describe(frames)
	if len(frames) < 4 || names[1] != "blocker" || !jit.Contains(frames[2].PC) || names[3] != "main" {
		t.Errorf("frames %q, want read, blocker, the JIT page, main", names)
	}
	if err := u.AddFrames("bad", 1, 2, []byte{100, 0, 0, 0, 0, 0, 0, 0}, 8); err == nil {
		t.Error("a damaged .eh_frame was accepted")
	}
}

// selfMem reads the test process's own memory.
func selfMem(t *testing.T) procMem { return openMem(t, os.Getpid()) }

func TestVDSO(t *testing.T) {
	maps, err := procfs.ReadMaps(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var vdso procfs.Mapping
	for _, m := range maps {
		if m.Path == "[vdso]" {
			vdso = m
		}
	}
	if vdso.Start == 0 {
		t.Skip("no [vdso]")
	}
	u := New(os.Getpid(), maps, selfMem(t))
	mod := u.module(vdso)
	if mod.err != nil {
		t.Fatalf("load [vdso]: %v", mod.err)
	}
	if len(mod.fdes) == 0 {
		t.Fatal("[vdso] has no FDEs")
	}
	fde, bias, _, err := u.fdeFor(vdso.Start + mod.fdes[0].Begin())
	if err != nil || bias != vdso.Start || fde != mod.fdes[0] {
		t.Errorf("fdeFor in [vdso] = %v, bias %#x, %v", fde, bias, err)
	}
	if _, _, err := establish(fde, fde.Begin()); err != nil {
		t.Errorf("establish: %v", err)
	}
}

func TestEval(t *testing.T) {
	u := &Unwinder{mem: selfMem(t)}
	var rs regState
	rs.set(regRSP, 0x1000)
	rs.set(regRA, 0x40100b)
	// The CFA of a .plt entry: rsp+8 + ((rip&15) >= 11) << 3.
	plt := []byte{0x77, 8, 0x80, 0, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22}
	if v, err := u.eval(plt, &rs, nil); err != nil || v != 0x1010 {
		t.Errorf("plt expression = %#x, %v; want 0x1010", v, err)
	}
	rs.set(regRA, 0x401005)
	if v, err := u.eval(plt, &rs, nil); err != nil || v != 0x1008 {
		t.Errorf("plt expression = %#x, %v; want 0x1008", v, err)
	}
	for _, bad := range [][]byte{{0x22}, {0x06}, {0x7a, 0}, {0x2f, 0xfd, 0xff}, {0x0e, 1}, {0xe0}} {
		if v, err := u.eval(bad, &rs, nil); err == nil {
			t.Errorf("eval(%x) = %#x, want an error", bad, v)
		}
	}
}
