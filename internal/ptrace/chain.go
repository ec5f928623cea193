package ptrace

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"golang.org/x/sys/unix"
)

// Call is one system call of Syscalls.
type Call struct {
	Nr   uint64
	Args [6]uint64
	// From maps an argument's index to the index of an earlier call in
	// the same chain whose result it takes (a file descriptor, say).
	From map[int]int
}

// ChainCodeSize is how many bytes of executable memory Syscalls needs.
const ChainCodeSize = 82 + 27 // chainLoop, then injectSafe's epilogue (TestSyscalls checks)

const (
	chainEnd      = 39 // the terminator's number (getpid's); never a call of a chain
	chainEntry    = 80 // bytes per call in the table: nr, 6 arguments, 3 result slots
	chainTerm     = 88 // the terminator: its mark, the wait's 6 arguments, a spare word, the time limit, a dummy slot
	chainMaxUses  = 3  // later arguments one result may feed
	chainMaxCalls = 16
	// chainWait is how long the thread waits at the end of a chain for
	// livesplice, which normally takes it back within microseconds: if
	// livesplice was killed, the program goes on after this pause.
	chainWait = 200 * time.Millisecond
)

// chainLoop runs a table of system calls at rsp (every register it uses
// is one the epilogue restores; rsp itself is reset by it):
//
//	loop:  pop rax, rdi, rsi, rdx, r10, r8, r9   ; nr and arguments
//	       cmp eax, 39 ; je final                ; the terminator
//	       syscall
//	       mov [rsp-56], rax                     ; the result, over nr
//	       cmp rax, -4095 ; jae fail             ; failed: skip the rest
//	       3x (pop rcx ; mov [rcx], rax)         ; into later arguments
//	       jmp loop
//	fail:  add rsp, 24                           ; past the result slots
//	skip:  cmp qword [rsp], 39 ; je loop         ; at the terminator
//	       add rsp, 80 ; jmp skip                ; past a call not made
//	final: mov qword [rsp-56], 1                 ; done (livesplice polls)
//	wait:  mov eax, 271 ; syscall                ; ppoll(NULL, 0, &limit)
//	       test rax, rax ; jne wait              ; until it times out
//	                                             ; then the epilogue
//
// The wait is ppoll, not a futex or nanosleep: those keep their remaining
// time in the thread's restart block when interrupted, over the one of the
// system call the thread was in when livesplice stopped it (a nanosleep
// would then resume as our wait). ppoll writes what remains of the limit
// back into the table, so a signal's interruptions do not prolong it.
//
// The run costs the thread no stops: livesplice continues it, polls the
// done word, and interrupts it in its wait (runToDone).
var chainLoop = []byte{
	0x58, 0x5f, 0x5e, 0x5a, 0x41, 0x5a, 0x41, 0x58, 0x41, 0x59, // pops
	0x83, 0xf8, chainEnd, // cmp eax, 39
	0x74, 0x2e, // je final (+46)
	0x0f, 0x05, // syscall
	0x48, 0x89, 0x44, 0x24, 0xc8, // mov [rsp-56], rax
	0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, // cmp rax, -4095
	0x73, 0x0e, // jae fail (+14)
	0x59, 0x48, 0x89, 0x01, // pop rcx; mov [rcx], rax
	0x59, 0x48, 0x89, 0x01,
	0x59, 0x48, 0x89, 0x01,
	0xeb, 0xd4, // jmp loop (-44)
	0x48, 0x83, 0xc4, 0x18, // fail: add rsp, 24
	0x48, 0x83, 0x3c, 0x24, chainEnd, // skip: cmp qword [rsp], 39
	0x74, 0xc9, // je loop (-55)
	0x48, 0x83, 0xc4, 0x50, // add rsp, 80
	0xeb, 0xf3, // jmp skip (-13)
	0x48, 0xc7, 0x44, 0x24, 0xc8, 0x01, 0x00, 0x00, 0x00, // final: mov qword [rsp-56], 1
	0xb8, 0x0f, 0x01, 0x00, 0x00, // wait: mov eax, 271 (ppoll)
	0x0f, 0x05, // syscall
	0x48, 0x85, 0xc0, // test rax, rax
	0x75, 0xf4, // jne wait (-12)
}

// Syscalls runs calls in order inside the target in one injection, with
// no stop of the thread between them (one round trip instead of two per
// call), from ChainCodeSize bytes of executable memory at code that the
// caller owns and no thread runs. It stops at the first call that fails.
// It returns the results of the calls that ran; if one failed, its raw
// result is the last and the error wraps its unix.Errno and is a
// *CallError. A call's result must not lie in -4095..-1 unless it failed
// (the kernel's convention). If livesplice dies meanwhile, the thread runs
// the rest of the calls, waits chainWait for a livesplice that no longer
// comes, and goes on as before: the calls must be harmless to the program
// when left half done (mappings, descriptors closed by a later call).
func (p *Process) Syscalls(code uint64, calls []Call) ([]uint64, error) {
	if len(calls) == 0 {
		return nil, nil
	}
	if len(calls) > chainMaxCalls {
		return nil, fmt.Errorf("ptrace syscalls pid %d: %d calls, at most %d", p.pid, len(calls), chainMaxCalls)
	}
	size := len(calls)*chainEntry + chainTerm
	var results []uint64
	var failed error
	err := p.do("syscalls", func() error {
		var table []byte
		var base, done uint64
		_, err := p.injectSafe("syscalls", code, size+16, &done, chainLoop, chainEnd, syscallTimeout,
			func(r *unix.PtraceRegs, _, area uint64) error {
				base = (area - 256 - uint64(size)) &^ 15
				done = base + uint64(len(calls)*chainEntry) // the terminator's mark
				var err error
				table, err = chainTable(calls, base)
				if err != nil {
					return err
				}
				if err := p.writeMem(base, table); err != nil {
					return err
				}
				r.Rip = code
				r.Rsp = base
				r.Orig_rax = math.MaxUint64
				r.Eflags &^= eflagsTF
				return nil
			},
			func(*unix.PtraceRegs) (uint64, error) {
				if err := p.readMem(base, table); err != nil {
					return 0, err
				}
				// Each call's slot holds its result; the first failure
				// ended the chain (the kernel's errors are -4095..-1).
				for i := range calls {
					v := binary.LittleEndian.Uint64(table[i*chainEntry:])
					results = append(results, v)
					if e := int64(v); e >= -4095 && e <= -1 {
						failed = &CallError{Index: i, Nr: calls[i].Nr, Errno: unix.Errno(-e)}
						break
					}
				}
				return 0, nil
			})
		return err
	})
	if err != nil {
		return results, err
	}
	return results, failed
}

// chainTable lays out calls for chainLoop at base.
func chainTable(calls []Call, base uint64) ([]byte, error) {
	b := make([]byte, len(calls)*chainEntry+chainTerm)
	term := len(calls) * chainEntry
	timeout := base + uint64(term) + 64
	dummy := base + uint64(term) + 80 // where unused results go
	uses := make([][]uint64, len(calls))
	for j, c := range calls {
		if c.Nr == chainEnd {
			return nil, fmt.Errorf("getpid cannot be a call of a chain")
		}
		for k, from := range c.From {
			if k < 0 || k > 5 || from < 0 || from >= j {
				return nil, fmt.Errorf("call %d: argument %d from call %d: not an earlier call", j, k, from)
			}
			uses[from] = append(uses[from], base+uint64(j*chainEntry+8+8*k))
		}
	}
	for i, c := range calls {
		e := b[i*chainEntry:]
		binary.LittleEndian.PutUint64(e, c.Nr)
		for k, a := range c.Args {
			binary.LittleEndian.PutUint64(e[8+8*k:], a)
		}
		if len(uses[i]) > chainMaxUses {
			return nil, fmt.Errorf("call %d: result used %d times, at most %d", i, len(uses[i]), chainMaxUses)
		}
		for k := 0; k < chainMaxUses; k++ {
			d := dummy
			if k < len(uses[i]) {
				d = uses[i][k]
			}
			binary.LittleEndian.PutUint64(e[56+8*k:], d)
		}
	}
	t := b[term:]
	binary.LittleEndian.PutUint64(t, chainEnd)
	for k, a := range []uint64{0, 0, timeout, 0, 8, 0} { // ppoll(NULL, 0, &limit, NULL, 8)
		binary.LittleEndian.PutUint64(t[8+8*k:], a)
	}
	binary.LittleEndian.PutUint64(t[64:], uint64(chainWait/time.Second))
	binary.LittleEndian.PutUint64(t[72:], uint64(chainWait%time.Second))
	return b, nil
}

// CallError is a call of Syscalls that the target's kernel refused.
type CallError struct {
	Index int // in the chain
	Nr    uint64
	Errno unix.Errno
}

func (e *CallError) Error() string {
	return fmt.Sprintf("system call %d (call %d of the chain): %v", e.Nr, e.Index, e.Errno)
}

func (e *CallError) Unwrap() error { return e.Errno }
