package ptrace

import (
	"encoding/binary"
	"fmt"
	"math"

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
const ChainCodeSize = 51 + 27 // chainLoop, then injectSafe's epilogue (TestSyscalls checks)

const (
	chainGetpid   = 39 // ends the table; never a call of a chain
	chainEntry    = 80 // bytes per call in the table: nr, 6 arguments, 3 result slots
	chainTerm     = 56 // the terminator: nr and 6 (unused) arguments
	chainMaxUses  = 3  // later arguments one result may feed
	chainMaxCalls = 16
)

// chainLoop runs a table of system calls at rsp (every register it uses
// is one the epilogue restores; rsp itself is reset by it):
//
//	loop: pop rax, rdi, rsi, rdx, r10, r8, r9   ; nr and arguments
//	      cmp eax, 39 ; je final                ; the terminator
//	      syscall
//	      mov [rsp-56], rax                     ; the result, over nr
//	      cmp rax, -4095 ; jae fail             ; failed: stop here
//	      3x (pop rcx ; mov [rcx], rax)         ; into later arguments
//	      jmp loop
//	fail: mov eax, 39
//	final: syscall                              ; caught by the tracer
var chainLoop = []byte{
	0x58, 0x5f, 0x5e, 0x5a, 0x41, 0x5a, 0x41, 0x58, 0x41, 0x59, // pops
	0x83, 0xf8, chainGetpid, // cmp eax, 39
	0x74, 0x22, // je final (+34)
	0x0f, 0x05, // syscall
	0x48, 0x89, 0x44, 0x24, 0xc8, // mov [rsp-56], rax
	0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, // cmp rax, -4095
	0x73, 0x0e, // jae fail (+14)
	0x59, 0x48, 0x89, 0x01, // pop rcx; mov [rcx], rax
	0x59, 0x48, 0x89, 0x01,
	0x59, 0x48, 0x89, 0x01,
	0xeb, 0xd4, // jmp loop (-44)
	0xb8, chainGetpid, 0, 0, 0, // fail: mov eax, 39
	0x0f, 0x05, // final: syscall
}

// Syscalls runs calls in order inside the target in one injection (one
// round trip instead of one per call), from ChainCodeSize bytes of
// executable memory at code that the caller owns and no thread runs. It
// stops at the first call that fails. It returns the results of the calls
// that ran; if one failed, its raw result is the last and the error wraps
// its unix.Errno and is a *CallError. If livesplice dies meanwhile, the
// thread runs the rest of the calls and goes on as before: the calls must
// be harmless to the program when left half done (mappings, descriptors
// closed by a later call).
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
		var base uint64
		_, err := p.injectSafe("syscalls", code, size+16, chainLoop, chainGetpid, syscallTimeout,
			func(r *unix.PtraceRegs, _, area uint64) error {
				base = (area - 256 - uint64(size)) &^ 15
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
			func(r *unix.PtraceRegs) (uint64, error) {
				// rsp is just past the 7 words popped for the last call
				// tried (or for the terminator).
				done := int((r.Rsp - 56 - base) / chainEntry)
				if r.Rsp < base+56 || done > len(calls) {
					return 0, fmt.Errorf("chain ended at rsp %#x, table at %#x", r.Rsp, base)
				}
				if err := p.readMem(base, table); err != nil {
					return 0, err
				}
				slot := func(i int) uint64 { return binary.LittleEndian.Uint64(table[i*chainEntry:]) }
				for i := 0; i < done; i++ {
					results = append(results, slot(i))
				}
				if done < len(calls) {
					// The call that failed: its slot holds its result.
					v := slot(done)
					results = append(results, v)
					failed = &CallError{Index: done, Nr: calls[done].Nr, Errno: unix.Errno(-int64(v))}
				}
				return 0, nil
			})
		return err
	})
	if err != nil {
		return results, err
	}
	if failed == nil && len(results) != len(calls) {
		return results, fmt.Errorf("ptrace syscalls pid %d: %d of %d calls ran", p.pid, len(results), len(calls))
	}
	return results, failed
}

// chainTable lays out calls for chainLoop at base.
func chainTable(calls []Call, base uint64) ([]byte, error) {
	b := make([]byte, len(calls)*chainEntry+chainTerm)
	term := len(calls) * chainEntry
	dummy := base + uint64(term) + 8 // the terminator's first argument
	uses := make([][]uint64, len(calls))
	for j, c := range calls {
		if c.Nr == chainGetpid {
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
	binary.LittleEndian.PutUint64(b[term:], chainGetpid)
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
