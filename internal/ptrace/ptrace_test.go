package ptrace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestAttachSyscallDetach(t *testing.T) {
	bin := build(t, "counter")
	pr := start(t, bin)
	pr.checkCounting(3)

	p := attach(t, pr.pid())
	if p.Pid() != pr.pid() {
		t.Fatalf("Pid() = %d", p.Pid())
	}
	if got := p.Threads(); !slices.Equal(got, []int{pr.pid()}) {
		t.Fatalf("Threads() = %v, want [%d]", got, pr.pid())
	}
	if s := threadState(pr.pid(), pr.pid()); s != "t (tracing stop)" {
		t.Fatalf("state after Attach: %q", s)
	}
	before, err := p.GetRegs(pr.pid())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		got, err := p.Syscall(unix.SYS_GETPID)
		if err != nil {
			t.Fatalf("Syscall(getpid): %v", err)
		}
		if int(got) != pr.pid() {
			t.Fatalf("Syscall(getpid) = %d, want %d", got, pr.pid())
		}
	}
	after, err := p.GetRegs(pr.pid())
	if err != nil {
		t.Fatal(err)
	}
	if before != after {
		t.Fatalf("registers changed by Syscall:\n%+v\n%+v", before, after)
	}
	// An errno comes back as an error and the raw value.
	got, err := p.Syscall(unix.SYS_CLOSE, 12345)
	if !errors.Is(err, unix.EBADF) || int64(got) != -int64(unix.EBADF) {
		t.Fatalf("Syscall(close(12345)) = %d, %v; want -EBADF", int64(got), err)
	}
	if _, err := p.Syscall(unix.SYS_GETPID, 1, 2, 3, 4, 5, 6, 7); err == nil {
		t.Fatal("Syscall with 7 arguments did not fail")
	}
	pr.drain()
	if err := p.Detach(); err != nil {
		t.Fatalf("Detach: %v", err)
	}
	if _, err := p.Syscall(unix.SYS_GETPID); err == nil {
		t.Fatal("Syscall after Detach did not fail")
	}
	pr.checkCounting(5)
}

func TestMmapWriteMem(t *testing.T) {
	bin := build(t, "counter")
	pr := start(t, bin)
	pr.next(5 * time.Second)
	p := attach(t, pr.pid())

	const size = 3 * 4096
	addr, err := p.Syscall(unix.SYS_MMAP, 0, size, unix.PROT_READ|unix.PROT_EXEC,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	if addr == 0 || addr&0xfff != 0 {
		t.Fatalf("mmap returned %#x", addr)
	}
	maps, err := os.ReadFile("/proc/" + strconv.Itoa(pr.pid()) + "/maps")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(maps), strconv.FormatUint(addr, 16)+"-"+strconv.FormatUint(addr+size, 16)+" r-xp") {
		t.Fatalf("no r-xp mapping at %#x:\n%s", addr, maps)
	}
	data := make([]byte, 5000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	// Straddles the page boundary of a page the target cannot write.
	if err := p.WriteMem(addr+100, data); err != nil {
		t.Fatalf("WriteMem: %v", err)
	}
	back := make([]byte, len(data))
	if err := p.ReadMem(addr+100, back); err != nil {
		t.Fatalf("ReadMem: %v", err)
	}
	if !slices.Equal(back, data) {
		t.Fatal("ReadMem does not return what WriteMem wrote")
	}
	// A read running into a hole must fail, not return a short read.
	if _, err := p.Syscall(unix.SYS_MUNMAP, addr+size-4096, 4096); err != nil {
		t.Fatalf("munmap: %v", err)
	}
	if err := p.ReadMem(addr+size-4096-4, make([]byte, 8)); err == nil {
		t.Fatal("ReadMem into an unmapped page did not fail")
	}
	if err := p.ReadMem(1<<63+5, make([]byte, 8)); err == nil {
		t.Fatal("ReadMem at 1<<63 did not fail")
	}
	if _, err := p.Syscall(unix.SYS_MUNMAP, addr, size-4096); err != nil {
		t.Fatalf("munmap: %v", err)
	}
	if err := p.ReadMem(addr, back[:8]); err == nil {
		t.Fatal("ReadMem after munmap did not fail")
	}
	if err := p.Detach(); err != nil {
		t.Fatal(err)
	}
	pr.checkCounting(3)
}

// A thread blocked in read(2) or nanosleep(2) when we attach must restart
// the call transparently after we ran system calls on it.
func TestBlockingSyscallRestarts(t *testing.T) {
	bin := build(t, "blockread")
	t.Run("read", func(t *testing.T) {
		pr := start(t, bin)
		if l := pr.next(5 * time.Second); l != "ready" {
			t.Fatalf("got %q", l)
		}
		for round := 0; round < 3; round++ {
			// Wait until it blocks in read(0, ...).
			for i := 0; ; i++ {
				b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pr.pid()))
				if strings.HasPrefix(string(b), "0 0x0 ") {
					break
				}
				if i > 1000 {
					t.Fatalf("program not blocked in read: %q", b)
				}
				time.Sleep(time.Millisecond)
			}
			p := attach(t, pr.pid())
			r, _ := p.GetRegs(pr.pid())
			if r.Orig_rax != unix.SYS_READ {
				t.Fatalf("not stopped in read: orig_rax %d", r.Orig_rax)
			}
			for i := 0; i < 4; i++ {
				if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Detach(); err != nil {
				t.Fatal(err)
			}
			msg := "line" + strconv.Itoa(round)
			if _, err := pr.stdin.Write([]byte(msg + "\n")); err != nil {
				t.Fatal(err)
			}
			if l := pr.next(5 * time.Second); l != "got "+msg {
				t.Fatalf("after detach program printed %q, want %q", l, "got "+msg)
			}
		}
	})
	t.Run("nanosleep", func(t *testing.T) {
		pr := start(t, bin, "sleep")
		for round := 0; round < 3; round++ {
			if l := pr.next(5 * time.Second); l != "sleeping" {
				t.Fatalf("got %q", l)
			}
			time.Sleep(50 * time.Millisecond)
			p := attach(t, pr.pid())
			for i := 0; i < 4; i++ {
				if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
					t.Fatal(err)
				}
			}
			// Resume and stop again mid-sleep: the second interruption
			// runs through restart_syscall.
			if err := p.Resume(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
			if err := p.Stop(); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
				t.Fatal(err)
			}
			if err := p.Detach(); err != nil {
				t.Fatal(err)
			}
			l := pr.next(5 * time.Second)
			ms, ok := strings.CutPrefix(l, "slept ")
			if !ok {
				t.Fatalf("after detach program printed %q", l)
			}
			if n, _ := strconv.Atoi(ms); n < 390 {
				t.Fatalf("slept %s ms, want >= 400", ms)
			}
		}
	})
}

// Signals that arrive while the process is attached are delivered again.
func TestSignalsRedelivered(t *testing.T) {
	bin := build(t, "signals")
	pr := start(t, bin)
	pr.waitFor("usr1 0", 5*time.Second)
	p := attach(t, pr.pid())
	// sigqueue(pid, SIGUSR1, 42): the handler must see this siginfo, not
	// the one of a stop we caused since.
	var si [128]byte
	binary.LittleEndian.PutUint32(si[0:], uint32(unix.SIGUSR1))
	binary.LittleEndian.PutUint32(si[8:], uint32(0xffffffff)) // SI_QUEUE
	binary.LittleEndian.PutUint32(si[16:], uint32(os.Getpid()))
	binary.LittleEndian.PutUint32(si[20:], uint32(os.Getuid()))
	binary.LittleEndian.PutUint64(si[24:], 42)
	if _, _, e := unix.Syscall(unix.SYS_RT_SIGQUEUEINFO, uintptr(pr.pid()), uintptr(unix.SIGUSR1), uintptr(unsafe.Pointer(&si[0]))); e != 0 {
		t.Fatal(e)
	}
	// The thread takes the signal only once it runs: it reports a
	// signal-delivery-stop, which Stop collects and keeps.
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
		t.Fatal(err)
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	pr.drain()
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := p.Detach(); err != nil {
		t.Fatal(err)
	}
	if l := pr.waitFor("usr1 1", 5*time.Second); l != "usr1 1 code -1 val 42" {
		t.Fatalf("program printed %q, want %q", l, "usr1 1 code -1 val 42")
	}
}

func TestThreadChurn(t *testing.T) {
	bin := build(t, "threads")
	pr := start(t, bin)
	pr.waitFor("iter", 5*time.Second)
	pid := pr.pid()
	maxThreads := 0
	for round := 0; round < 20; round++ {
		p, err := Attach(pid)
		if err != nil {
			t.Fatalf("round %d: Attach: %v", round, err)
		}
		// On failure, detach before the program is killed: a traced
		// process that dies is reaped only by its tracer.
		t.Cleanup(func() { p.Detach() })
		check := func(what string) {
			t.Helper()
			got := p.Threads()
			if len(got) < 9 || got[0] != pid {
				t.Fatalf("round %d %s: Threads() = %v", round, what, got)
			}
			maxThreads = max(maxThreads, len(got))
			for _, tid := range got {
				if s := threadState(pid, tid); s != "t (tracing stop)" {
					t.Fatalf("round %d %s: tid %d state %q", round, what, tid, s)
				}
			}
			// Every thread of the process is attached and stopped, so
			// none can come or go.
			all := tasks(t, pid)
			slices.Sort(all)
			sorted := slices.Sorted(slices.Values(got))
			if !slices.Equal(all, sorted) {
				t.Fatalf("round %d %s: /proc task list %v, attached %v", round, what, all, sorted)
			}
		}
		check("after Attach")
		for i := 0; i < 2; i++ {
			if err := p.Resume(); err != nil {
				t.Fatalf("round %d: Resume: %v", round, err)
			}
			time.Sleep(time.Millisecond)
			if err := p.Stop(); err != nil {
				t.Fatalf("round %d: Stop: %v", round, err)
			}
			check("after Stop")
		}
		if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
			t.Fatalf("round %d: Syscall: %v", round, err)
		}
		if err := p.Detach(); err != nil {
			t.Fatalf("round %d: Detach: %v", round, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Logf("up to %d threads attached", maxThreads)
	pr.drain()
	pr.waitFor("iter", 5*time.Second)
	pr.waitFor("iter", 5*time.Second)
}

func TestCall(t *testing.T) {
	bin := build(t, "counter")
	pr := start(t, bin)
	pr.next(5 * time.Second)
	syms := symbols(t, bin, pr.pid())
	p := attach(t, pr.pid())
	before, err := p.GetRegs(pr.pid())
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Call(syms["add3"].Value, time.Second, 1, 2, 3)
	if err != nil {
		t.Fatalf("Call(add3): %v", err)
	}
	if got != 321 {
		t.Fatalf("add3(1,2,3) = %d, want 321", got)
	}
	got, err = p.Call(syms["sum6"].Value, time.Second, 1, 2, 3, 4, 5, 6)
	if err != nil {
		t.Fatalf("Call(sum6): %v", err)
	}
	if got != 91 {
		t.Fatalf("sum6(1..6) = %d, want 91", got)
	}

	t0 := time.Now()
	_, err = p.Call(syms["forever"].Value, 200*time.Millisecond)
	if el := time.Since(t0); !errors.Is(err, ErrTimeout) || el < 200*time.Millisecond || el > 2*time.Second {
		t.Fatalf("Call(forever) = %v after %v, want ErrTimeout after about 200ms", err, el)
	}
	after, err := p.GetRegs(pr.pid())
	if err != nil {
		t.Fatal(err)
	}
	if before != after {
		t.Fatalf("registers not restored:\n%+v\n%+v", before, after)
	}
	// Calling address 0 faults; the error says so and nothing changes.
	if _, err := p.Call(0, time.Second); err == nil || !strings.Contains(err.Error(), "SIGSEGV") {
		t.Fatalf("Call(0) = %v, want a SIGSEGV error", err)
	}
	got, err = p.Call(syms["add3"].Value, time.Second, 5, 0, 0)
	if err != nil || got != 5 {
		t.Fatalf("Call(add3) after timeout = %d, %v", got, err)
	}
	if err := p.Detach(); err != nil {
		t.Fatal(err)
	}
	pr.checkCounting(5)
}

func TestAlreadyTraced(t *testing.T) {
	bin := build(t, "counter")
	pr := start(t, bin)
	pr.next(5 * time.Second)
	p := attach(t, pr.pid())
	_, err := Attach(pr.pid())
	if !errors.Is(err, ErrTraced) {
		t.Fatalf("second Attach = %v, want ErrTraced", err)
	}
	if !strings.Contains(err.Error(), "pid") {
		t.Fatalf("error does not name the tracer: %v", err)
	}
	t.Log(err)
	if err := p.Detach(); err != nil {
		t.Fatal(err)
	}
	pr.checkCounting(3)
}

func TestAlreadyTracedByStrace(t *testing.T) {
	if _, err := exec.LookPath("strace"); err != nil {
		t.Skip("strace not installed")
	}
	bin := build(t, "counter")
	pr := start(t, "strace", "-f", "-o", "/dev/null", bin)
	pr.next(5 * time.Second)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pr.pid(), pr.pid()))
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("strace children %q", b)
	}
	t.Cleanup(func() { unix.Kill(child, unix.SIGKILL) })
	_, err = Attach(child)
	if !errors.Is(err, ErrTraced) || !strings.Contains(err.Error(), "strace") {
		t.Fatalf("Attach of a process under strace = %v, want ErrTraced naming strace", err)
	}
	t.Log(err)
	pr.checkCounting(3)
}

func TestAttachRefuses(t *testing.T) {
	if _, err := Attach(os.Getpid()); err == nil {
		t.Fatal("Attach(self) did not fail")
	}
	if _, err := Attach(0); err == nil {
		t.Fatal("Attach(0) did not fail")
	}
	if _, err := Attach(1 << 30); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("Attach(no such pid) = %v", err)
	}
}

func TestExit(t *testing.T) {
	bin := build(t, "counter")
	pr := start(t, bin)
	pr.next(5 * time.Second)
	p := attach(t, pr.pid())
	_, err := p.Syscall(unix.SYS_EXIT_GROUP, 7)
	if !errors.Is(err, ErrExited) {
		t.Fatalf("Syscall(exit_group) = %v, want ErrExited", err)
	}
	if err := p.Stop(); !errors.Is(err, ErrExited) {
		t.Fatalf("Stop after exit = %v, want ErrExited", err)
	}
	if err := p.Detach(); err != nil {
		t.Fatalf("Detach after exit: %v", err)
	}

	// Killed from outside while attached.
	pr = start(t, build(t, "threads"))
	pr.next(5 * time.Second)
	p = attach(t, pr.pid())
	if err := pr.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Syscall(unix.SYS_GETPID); !errors.Is(err, ErrExited) {
		t.Fatalf("Syscall after SIGKILL = %v, want ErrExited", err)
	}
	if err := p.Stop(); !errors.Is(err, ErrExited) {
		t.Fatalf("Stop after SIGKILL = %v, want ErrExited", err)
	}
	if err := p.Detach(); err != nil {
		t.Fatalf("Detach after SIGKILL: %v", err)
	}
}

// A process stopped by SIGSTOP stays stopped through Attach, Syscall,
// Resume and Detach, and runs again on SIGCONT.
func TestGroupStop(t *testing.T) {
	bin := build(t, "counter")
	pr := start(t, bin)
	pr.next(5 * time.Second)
	pid := pr.pid()
	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	for i := 0; !strings.HasPrefix(threadState(pid, pid), "T"); i++ {
		if i > 500 {
			t.Fatalf("SIGSTOP did not stop the program: %q", threadState(pid, pid))
		}
		time.Sleep(time.Millisecond)
	}
	p := attach(t, pid)
	if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
		t.Fatal(err)
	}
	pr.drain()
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if l := pr.drain(); l != "" {
		t.Fatalf("stopped program printed %q after Resume", l)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := p.Detach(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if l := pr.drain(); l != "" {
		t.Fatalf("stopped program printed %q after Detach", l)
	}
	if s := threadState(pid, pid); !strings.HasPrefix(s, "T") {
		t.Fatalf("state after Detach %q, want stopped", s)
	}
	if err := unix.Kill(pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	pr.checkCounting(3)
}

// A group leader that called pthread_exit is a zombie that cannot be
// traced; its live threads are.
func TestZombieLeader(t *testing.T) {
	bin := build(t, "zleader")
	pr := start(t, bin)
	pr.next(5 * time.Second)
	pid := pr.pid()
	for i := 0; threadState(pid, pid)[0] != 'Z'; i++ {
		if i > 500 {
			t.Fatalf("leader state %q", threadState(pid, pid))
		}
		time.Sleep(time.Millisecond)
	}
	p := attach(t, pid)
	tids := p.Threads()
	if len(tids) != 1 || tids[0] == pid {
		t.Fatalf("Threads() = %v, want the one worker", tids)
	}
	got, err := p.Syscall(unix.SYS_GETTID)
	if err != nil || int(got) != tids[0] {
		t.Fatalf("Syscall(gettid) = %d, %v; want %d", got, err, tids[0])
	}
	for i := 0; i < 3; i++ {
		if err := p.Resume(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Detach(); err != nil {
		t.Fatal(err)
	}
	pr.checkCounting(3)
}

// The group leader exits (pthread_exit) while attached and running: Stop
// drops it instead of waiting for a stop that never comes.
func TestLeaderExitsWhileAttached(t *testing.T) {
	bin := build(t, "zleader")
	pr := start(t, bin, "late")
	pr.next(5 * time.Second)
	pid := pr.pid()
	p := attach(t, pid)
	if tids := p.Threads(); len(tids) != 2 || tids[0] != pid {
		t.Fatalf("Threads() = %v", tids)
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	for i := 0; threadState(pid, pid)[0] != 'Z'; i++ {
		if i > 5000 {
			t.Fatalf("leader state %q", threadState(pid, pid))
		}
		time.Sleep(time.Millisecond)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	tids := p.Threads()
	if len(tids) != 1 || tids[0] == pid {
		t.Fatalf("Threads() = %v, want the one worker", tids)
	}
	got, err := p.Syscall(unix.SYS_GETTID)
	if err != nil || int(got) != tids[0] {
		t.Fatalf("Syscall(gettid) = %d, %v; want %d", got, err, tids[0])
	}
	if err := p.Detach(); err != nil {
		t.Fatal(err)
	}
	pr.checkCounting(3)
}

// ResumeExcept keeps one thread for system calls while the rest of a
// churning, thread-creating process runs on; Stop then catches every
// thread again, including those created meanwhile.
func TestResumeExcept(t *testing.T) {
	bin := build(t, "threads")
	pr := start(t, bin)
	pr.waitFor("iter", 5*time.Second)
	pid := pr.pid()
	for round := 0; round < 10; round++ {
		p, err := Attach(pid)
		if err != nil {
			t.Fatalf("round %d: Attach: %v", round, err)
		}
		t.Cleanup(func() { p.Detach() })
		keep := p.Threads()[1] // a long-running worker, not the leader
		if err := p.ResumeExcept(keep); err != nil {
			t.Fatalf("round %d: ResumeExcept: %v", round, err)
		}
		if got := p.Threads(); len(got) != 1 || got[0] != keep {
			t.Fatalf("round %d: stopped threads %v, want only %d", round, got, keep)
		}
		if s := threadState(pid, keep); s != "t (tracing stop)" {
			t.Fatalf("round %d: kept thread state %q", round, s)
		}
		for i := 0; i < 3; i++ {
			got, err := p.Syscall(unix.SYS_GETTID)
			if err != nil || int(got) != keep {
				t.Fatalf("round %d: gettid on the kept thread %d = %d, %v (stopped %v, pid %d)", round, keep, got, err, p.Threads(), pid)
			}
		}
		if round == 0 {
			pr.drain()
			pr.waitFor("iter", 5*time.Second) // the rest of the process runs
		}
		if err := p.Stop(); err != nil {
			t.Fatalf("round %d: Stop: %v", round, err)
		}
		all := tasks(t, pid)
		if got := p.Threads(); len(got) != len(all) {
			t.Fatalf("round %d: after Stop %d stopped, %d tasks", round, len(got), len(all))
		}
		if err := p.Detach(); err != nil {
			t.Fatalf("round %d: Detach: %v", round, err)
		}
	}
	pr.drain()
	pr.waitFor("iter", 5*time.Second)
}

// AttachOne stops only one thread, preferring one blocked in a system
// call, while a churning process runs on; Stop then catches every thread.
func TestAttachOne(t *testing.T) {
	bin := build(t, "threads")
	pr := start(t, bin)
	pr.waitFor("iter", 5*time.Second)
	pid := pr.pid()
	for round := 0; round < 10; round++ {
		p, err := AttachOne(pid)
		if err != nil {
			t.Fatalf("round %d: AttachOne: %v", round, err)
		}
		t.Cleanup(func() { p.Detach() })
		kept := p.Threads()
		if len(kept) != 1 {
			t.Fatalf("round %d: stopped threads %v, want one", round, kept)
		}
		got, err := p.Syscall(unix.SYS_GETTID)
		if err != nil || int(got) != kept[0] {
			t.Fatalf("round %d: gettid = %d, %v; kept %d", round, got, err, kept[0])
		}
		if kept[0] != pid { // the leader prints; it runs unless it is the one kept
			pr.drain()
			pr.waitFor("iter", 5*time.Second) // the rest of the process runs
		}
		if err := p.Stop(); err != nil {
			t.Fatalf("round %d: Stop: %v", round, err)
		}
		all := tasks(t, pid)
		if got := p.Threads(); len(got) != len(all) {
			t.Fatalf("round %d: after Stop %d stopped, %d tasks", round, len(got), len(all))
		}
		for _, tid := range all {
			if s := threadState(pid, tid); s != "t (tracing stop)" {
				t.Fatalf("round %d: tid %d state %q after Stop", round, tid, s)
			}
		}
		if err := p.Detach(); err != nil {
			t.Fatalf("round %d: Detach: %v", round, err)
		}
	}
	pr.drain()
	pr.waitFor("iter", 5*time.Second)
}

// StopSome stops just the threads named, the rest run on; Stop then
// stops the rest.
func TestStopSome(t *testing.T) {
	bin := build(t, "threads")
	pr := start(t, bin)
	pr.waitFor("iter", 5*time.Second)
	pid := pr.pid()
	p, err := AttachOne(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Detach() })
	kept := p.Threads()[0]
	var some []int
	for _, tid := range tasks(t, pid) {
		if tid != kept && tid != pid && len(some) < 3 {
			some = append(some, tid)
		}
	}
	if err := p.StopSome(some); err != nil {
		t.Fatal(err)
	}
	got := p.Threads()
	if len(got) != len(some)+1 {
		t.Fatalf("stopped %v, want %v and the kept %d", got, some, kept)
	}
	for _, tid := range some {
		if s := threadState(pid, tid); s != "t (tracing stop)" {
			t.Fatalf("tid %d state %q", tid, s)
		}
	}
	if kept != pid {
		pr.drain()
		pr.waitFor("iter", 5*time.Second) // the leader still runs
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if len(p.Threads()) != len(tasks(t, pid)) {
		t.Fatalf("after Stop: %d stopped, %d tasks", len(p.Threads()), len(tasks(t, pid)))
	}
	if err := p.Detach(); err != nil {
		t.Fatal(err)
	}
}
