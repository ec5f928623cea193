package ptrace

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A chain of system calls runs in one injection, results feeding later
// arguments, on a Process whose tracer is the caller's own thread.
func TestSyscalls(t *testing.T) {
	if len(chainLoop)+27 != ChainCodeSize {
		t.Fatalf("ChainCodeSize %d, but the code is %d bytes and the epilogue 27", ChainCodeSize, len(chainLoop))
	}
	bin := build(t, "counter")
	pr := start(t, bin)
	pr.next(5 * time.Second)
	pid := pr.pid()
	err := Here(func() error {
		p, err := AttachOneHere(pid)
		if err != nil {
			return err
		}
		defer p.Detach()
		before, err := p.GetRegs(p.Threads()[0])
		if err != nil {
			return err
		}
		code, err := p.Syscall(unix.SYS_MMAP, 0, 4096, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
		if err != nil {
			return fmt.Errorf("mmap: %w", err)
		}
		name := code + 2048
		if err := p.WriteMem(name, []byte("chain-test\x00")); err != nil {
			return err
		}
		fd := map[int]int{0: 0}
		res, err := p.Syscalls(code, []Call{
			{Nr: unix.SYS_MEMFD_CREATE, Args: [6]uint64{name, unix.MFD_CLOEXEC}},
			{Nr: unix.SYS_FTRUNCATE, Args: [6]uint64{0, 8192}, From: fd},
			{Nr: unix.SYS_MMAP, Args: [6]uint64{0, 8192, unix.PROT_READ, unix.MAP_PRIVATE}, From: map[int]int{4: 0}},
			{Nr: unix.SYS_CLOSE, From: fd},
		})
		if err != nil || len(res) != 4 {
			return fmt.Errorf("Syscalls = %#x, %v; want 4 results", res, err)
		}
		maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
		if want := fmt.Sprintf("%x-%x r--p 00000000 ", res[2], res[2]+8192); !strings.Contains(string(maps), want) ||
			!strings.Contains(string(maps), "/memfd:chain-test (deleted)") {
			return fmt.Errorf("no memfd mapping %q:\n%s", want, maps)
		}
		if _, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, res[0])); err == nil {
			return fmt.Errorf("fd %d still open: the close did not get the memfd_create's result", res[0])
		}
		// The first failure ends the chain; the calls after it do not run.
		res, err = p.Syscalls(code, []Call{
			{Nr: unix.SYS_GETUID},
			{Nr: unix.SYS_CLOSE, Args: [6]uint64{12345}},
			{Nr: unix.SYS_MUNMAP, Args: [6]uint64{code, 4096}},
		})
		var ce *CallError
		if !errors.As(err, &ce) || ce.Index != 1 || !errors.Is(err, unix.EBADF) || len(res) != 2 || int64(res[1]) != -int64(unix.EBADF) {
			return fmt.Errorf("failing chain = %#x, %v; want EBADF at call 1", res, err)
		}
		if err := p.ReadMem(code, make([]byte, 8)); err != nil {
			return fmt.Errorf("the call after the failure ran: %w", err)
		}
		if _, err := p.Syscalls(code, []Call{{Nr: unix.SYS_GETPID}}); err == nil {
			return errors.New("getpid in a chain was not refused")
		}
		if _, err := p.Syscalls(code, []Call{{Nr: unix.SYS_CLOSE, From: map[int]int{0: 0}}}); err == nil {
			return errors.New("a call taking its own result was not refused")
		}
		if _, err := p.Syscalls(code, make([]Call, chainMaxCalls+1)); err == nil || !strings.Contains(err.Error(), "at most") {
			return fmt.Errorf("a chain of %d calls: %v, want refused", chainMaxCalls+1, err)
		}
		many := []Call{{Nr: unix.SYS_GETUID}}
		for k := 0; k <= chainMaxUses; k++ {
			many = append(many, Call{Nr: unix.SYS_GETUID, From: map[int]int{0: 0}})
		}
		if _, err := p.Syscalls(code, many); err == nil || !strings.Contains(err.Error(), "result used") {
			return fmt.Errorf("a result fed to %d arguments: %v, want refused", chainMaxUses+1, err)
		}
		after, err := p.GetRegs(p.Threads()[0])
		if err != nil {
			return err
		}
		if before != after {
			return fmt.Errorf("registers changed by Syscalls:\n%+v\n%+v", before, after)
		}
		// Only this thread may use the Process.
		errc := make(chan error)
		go func() { _, err := p.Syscall(unix.SYS_GETPID); errc <- err }()
		if err := <-errc; err == nil || !strings.Contains(err.Error(), "not on the tracer thread") {
			return fmt.Errorf("Syscall from another thread: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	pr.drain()
	pr.checkCounting(3)
}

// A livesplice that takes the thread back only after it stopped waiting
// (chainWait) finds it back in the program: the chain's results are not
// trusted, the thread's registers and stack are left alone, and the
// program goes on unharmed.
func TestSyscallsStalled(t *testing.T) {
	bin := build(t, "counter")
	pr := start(t, bin)
	pr.next(5 * time.Second)
	pid := pr.pid()
	chainStall = chainWait + 300*time.Millisecond
	defer func() { chainStall = 0 }()
	err := Here(func() error {
		p, err := AttachOneHere(pid)
		if err != nil {
			return err
		}
		defer p.Detach()
		code, err := p.Syscall(unix.SYS_MMAP, 0, 4096, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
		if err != nil {
			return fmt.Errorf("mmap: %w", err)
		}
		res, err := p.Syscalls(code, []Call{{Nr: unix.SYS_GETUID}})
		if !errors.Is(err, ErrTimeout) || !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "went back to the program") {
			return fmt.Errorf("stalled chain = %#x, %v; want the thread gone back to the program", res, err)
		}
		// The thread is stopped in the program's code, usable as before.
		if got, err := p.Syscall(unix.SYS_GETPID); err != nil || int(got) != pid {
			return fmt.Errorf("getpid after the stalled chain = %d, %v", got, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	pr.drain()
	pr.checkCounting(3)
}
