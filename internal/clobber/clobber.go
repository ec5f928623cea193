// Package clobber finds which call-clobbered registers the functions of a
// relocatable x86-64 object write, by decoding their code, and what their
// callers may keep in registers across a call to them.
//
// GCC's -fipa-ra (on at -O2) lets a caller keep values in call-clobbered
// registers across a call to a function of its unit whose code it knows
// leaves them alone. When a patch makes such a function write more
// registers, create keeps the callers whose code only that changed and
// enters the new function through a stub that preserves what the old one
// left alone (package amd64, PreserveStub); this package says what that is.
package clobber

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"fmt"
	"strings"

	"golang.org/x/arch/x86/x86asm"
)

// Set is a set of registers: bit i (0-15) is the general register with
// x86 encoding number i (rax=0, rcx=1, rdx=2, rbx=3, rsp=4, rbp=5, rsi=6,
// rdi=7, r8-r15), bit 16+i is %xmmi (0-15).
type Set uint32

// Register numbers of Set.
const (
	RAX = 0
	RCX = 1
	RDX = 2
	RSI = 6
	RDI = 7
	R8  = 8
	R11 = 11
	X0  = 16
)

// CallClobbered are the registers the SysV x86-64 ABI lets a callee
// change: rax, rcx, rdx, rsi, rdi, r8-r11 and xmm0-15.
const CallClobbered Set = 1<<RAX | 1<<RCX | 1<<RDX | 1<<RSI | 1<<RDI |
	1<<8 | 1<<9 | 1<<10 | 1<<11 | 0xffff<<X0

var gprNames = []string{"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
	"r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"}

// GPRs are the general registers in s, in encoding order.
func (s Set) GPRs() []int { return s.list(0) }

// XMMs are the numbers of the xmm registers in s.
func (s Set) XMMs() []int { return s.list(X0) }

func (s Set) list(base int) []int {
	var out []int
	for i := 0; i < 16; i++ {
		if s&(1<<(base+i)) != 0 {
			out = append(out, i)
		}
	}
	return out
}

// String lists the registers, e.g. "%rcx,%rsi,%xmm2".
func (s Set) String() string {
	var n []string
	for _, r := range s.GPRs() {
		n = append(n, "%"+gprNames[r])
	}
	for _, r := range s.XMMs() {
		n = append(n, fmt.Sprintf("%%xmm%d", r))
	}
	return strings.Join(n, ",")
}

// Mode says which way an analysis errs.
type Mode int

const (
	// Under counts only the writes that surely happen: an instruction it
	// cannot read, or an indirect jump, writes nothing. Used for the old
	// function, whose untouched registers a stub preserves: preserving one
	// more than needed is harmless.
	Under Mode = iota
	// Over counts every register an instruction names as written, and all
	// call-clobbered registers for an instruction it cannot read or an
	// indirect jump (which may be a tail call). Used for the new function:
	// a stub is left out only if it surely writes nothing it must not.
	Over
)

// Object is a relocatable object whose code can be analysed.
type Object struct {
	f     *elf.File   // for Signature's DWARF
	dw    *dwarf.Data // read once by Signature
	dwErr error
	data  [][]byte          // section contents, by index
	syms  []elf.Symbol      // the symbol table (index i is ELF symbol i+1)
	rels  []map[uint64]int  // per text section: relocation offset -> target section (-1: outside the object's code)
	refs  []map[int]bool    // per text section: text sections it refers to
	funcs map[string]int    // function name -> section (first definition)
	memo  map[ownKey]ownVal // what each section itself writes, per mode
}

// Load reads a relocatable object.
func Load(obj []byte) (*Object, error) {
	f, err := elf.NewFile(bytes.NewReader(obj))
	if err != nil {
		return nil, err
	}
	if f.Machine != elf.EM_X86_64 || f.Type != elf.ET_REL {
		return nil, fmt.Errorf("not an x86-64 relocatable object")
	}
	o := &Object{f: f, data: make([][]byte, len(f.Sections)), rels: make([]map[uint64]int, len(f.Sections)),
		refs: make([]map[int]bool, len(f.Sections)), funcs: map[string]int{},
		memo: map[ownKey]ownVal{}}
	if o.syms, err = f.Symbols(); err != nil {
		return nil, err
	}
	for i, s := range f.Sections {
		if isText(s) {
			if o.data[i], err = s.Data(); err != nil {
				return nil, fmt.Errorf("section %s: %w", s.Name, err)
			}
		}
	}
	for _, y := range o.syms {
		if elf.ST_TYPE(y.Info) == elf.STT_FUNC && y.Section > 0 && int(y.Section) < len(f.Sections) && y.Name != "" {
			if _, ok := o.funcs[y.Name]; !ok {
				o.funcs[y.Name] = int(y.Section)
			}
		}
	}
	for _, rs := range f.Sections {
		if rs.Type != elf.SHT_RELA || int(rs.Info) >= len(f.Sections) || !isText(f.Sections[rs.Info]) {
			continue
		}
		b, err := rs.Data()
		if err != nil {
			return nil, fmt.Errorf("section %s: %w", rs.Name, err)
		}
		at := int(rs.Info)
		o.rels[at], o.refs[at] = map[uint64]int{}, map[int]bool{}
		for off := 0; off+24 <= len(b); off += 24 {
			r := f.ByteOrder.Uint64(b[off:])
			info := f.ByteOrder.Uint64(b[off+8:])
			if elf.R_X86_64(uint32(info)) == elf.R_X86_64_NONE {
				continue // binutils 2.40 leaves no-op entries: they are no call
			}
			to := -1
			if si := int(info >> 32); si > 0 && si <= len(o.syms) {
				y := o.syms[si-1]
				if y.Section > 0 && int(y.Section) < len(f.Sections) && isText(f.Sections[y.Section]) {
					to = int(y.Section)
					o.refs[at][to] = true
				}
			}
			o.rels[at][r] = to
		}
	}
	return o, nil
}

func isText(s *elf.Section) bool {
	return s.Type == elf.SHT_PROGBITS && s.Flags&elf.SHF_EXECINSTR != 0 && s.Flags&elf.SHF_ALLOC != 0
}

// Has reports whether the object defines a function name.
func (o *Object) Has(name string) bool { _, ok := o.funcs[name]; return ok }

// RefersTo reports whether the code of function from refers to function
// to (a call, a jump or its address), directly.
func (o *Object) RefersTo(from, to string) bool {
	a, ok1 := o.funcs[from]
	b, ok2 := o.funcs[to]
	return ok1 && ok2 && o.refs[a][b]
}

// Reaches reports whether function to can be reached from function from
// through the references of the object's code (from itself included).
func (o *Object) Reaches(from, to string) bool {
	a, ok1 := o.funcs[from]
	b, ok2 := o.funcs[to]
	if !ok1 || !ok2 {
		return false
	}
	seen := map[int]bool{a: true}
	work := []int{a}
	for len(work) > 0 {
		s := work[len(work)-1]
		work = work[:len(work)-1]
		if s == b {
			return true
		}
		for t := range o.refs[s] {
			if !seen[t] {
				seen[t] = true
				work = append(work, t)
			}
		}
	}
	return false
}

// Clobbers returns the call-clobbered registers function name writes,
// itself or through what it calls or jumps to: the object's own code is
// followed, and any other call (another object's function, a call through
// a pointer) writes all of CallClobbered.
func (o *Object) Clobbers(name string, m Mode) (Set, error) {
	s, ok := o.funcs[name]
	if !ok {
		return 0, fmt.Errorf("no function %s in the object", name)
	}
	return o.section(s, m), nil
}

// The result is the union, over every section reachable from the
// function through calls and jumps, of what that section itself writes.
func (o *Object) section(start int, m Mode) Set {
	var set Set
	seen := map[int]bool{start: true}
	work := []int{start}
	for len(work) > 0 {
		sec := work[len(work)-1]
		work = work[:len(work)-1]
		own, callees := o.own(sec, m)
		set |= own
		for _, c := range callees {
			if !seen[c] {
				seen[c] = true
				work = append(work, c)
			}
		}
	}
	return set & CallClobbered
}

type ownKey struct {
	sec int
	m   Mode
}

type ownVal struct {
	set     Set
	callees []int
}

// own is what the code of section sec itself writes (all call-clobbered
// registers if it calls outside the object or through a pointer), and the
// object's sections it calls or jumps to.
func (o *Object) own(sec int, m Mode) (Set, []int) {
	k := ownKey{sec, m}
	if v, ok := o.memo[k]; ok {
		return v.set, v.callees
	}
	var set Set
	var callees []int
	code := o.data[sec]
	rels := o.rels[sec]
	for pc := 0; pc < len(code); {
		in, err := x86asm.Decode(code[pc:], 64)
		if err != nil || in.Len == 0 {
			// Nothing after an unreadable byte can be trusted to be an
			// instruction boundary.
			if m == Over {
				set |= CallClobbered
			}
			break
		}
		_, rel := in.Args[0].(x86asm.Rel)
		switch {
		case rel:
			// A call, jump or conditional jump (to a .cold part).
			// A branch without a relocation stays in the section.
			if to, has := rels[uint64(pc+in.PCRelOff)]; has {
				if to < 0 {
					set |= CallClobbered // another object's function
				} else if to != sec {
					callees = append(callees, to)
				}
			}
		case in.Op == x86asm.CALL || in.Op == x86asm.JMP:
			if in.Op == x86asm.CALL || m == Over {
				// Through a pointer: anything may run. An indirect jump
				// is a switch's table far more often than a tail call;
				// only the over-estimate assumes the call.
				set |= CallClobbered
			}
		default:
			set |= writes(in, m)
		}
		pc += in.Len
	}
	o.memo[k] = ownVal{set, callees}
	return set, callees
}

// readOnlyFirst are instructions whose first operand is only read.
var readOnlyFirst = map[x86asm.Op]bool{
	x86asm.CMP: true, x86asm.TEST: true, x86asm.BT: true, x86asm.PUSH: true,
	x86asm.UCOMISS: true, x86asm.UCOMISD: true, x86asm.COMISS: true, x86asm.COMISD: true,
	x86asm.PTEST: true, x86asm.VPTEST: true, x86asm.VUCOMISS: true, x86asm.VUCOMISD: true,
	x86asm.VCOMISS: true, x86asm.VCOMISD: true, x86asm.OUT: true, x86asm.NOP: true,
	x86asm.PREFETCHT0: true, x86asm.PREFETCHT1: true, x86asm.PREFETCHT2: true, x86asm.PREFETCHNTA: true,
	x86asm.CLFLUSH: true,
}

// writes are the registers instruction in writes, per m.
func writes(in x86asm.Inst, m Mode) Set {
	var s Set
	if m == Over {
		// Every register it names, and whatever it writes implicitly.
		for _, a := range in.Args {
			if r, ok := a.(x86asm.Reg); ok {
				s |= regSet(r)
			}
		}
	} else if r, ok := in.Args[0].(x86asm.Reg); ok && !readOnlyFirst[in.Op] && !oneOperand(in) {
		s |= regSet(r)
	}
	switch in.Op {
	case x86asm.XCHG, x86asm.XADD:
		for _, a := range in.Args {
			if r, ok := a.(x86asm.Reg); ok {
				s |= regSet(r)
			}
		}
	case x86asm.MUL, x86asm.DIV, x86asm.IDIV:
		s |= 1<<RAX | 1<<RDX
	case x86asm.IMUL:
		if in.Args[1] == nil {
			s |= 1<<RAX | 1<<RDX
		}
	case x86asm.CWD, x86asm.CDQ, x86asm.CQO:
		s |= 1 << RDX
	case x86asm.CBW, x86asm.CWDE, x86asm.CDQE, x86asm.CMPXCHG, x86asm.LAHF:
		s |= 1 << RAX
	case x86asm.CMPXCHG8B, x86asm.CMPXCHG16B, x86asm.RDTSC, x86asm.XGETBV, x86asm.RDPMC:
		s |= 1<<RAX | 1<<RDX
	case x86asm.RDTSCP:
		s |= 1<<RAX | 1<<RDX | 1<<RCX
	case x86asm.CPUID:
		s |= 1<<RAX | 1<<RCX | 1<<RDX | 1<<3
	case x86asm.SYSCALL:
		s |= 1<<RAX | 1<<RCX | 1<<R11
	case x86asm.LOOP, x86asm.LOOPE, x86asm.LOOPNE:
		s |= 1 << RCX
	case x86asm.LODSB, x86asm.LODSW, x86asm.LODSD, x86asm.LODSQ:
		s |= 1<<RAX | 1<<RSI
	case x86asm.STOSB, x86asm.STOSW, x86asm.STOSD, x86asm.STOSQ, x86asm.SCASB, x86asm.SCASW, x86asm.SCASD, x86asm.SCASQ:
		s |= 1 << RDI
	case x86asm.MOVSB, x86asm.MOVSW, x86asm.MOVSD, x86asm.MOVSQ, x86asm.CMPSB, x86asm.CMPSW, x86asm.CMPSD, x86asm.CMPSQ:
		// MOVSD and CMPSD are also SSE instructions with operands.
		if in.Args[0] == nil || m == Over {
			s |= 1<<RSI | 1<<RDI
		}
	case x86asm.VZEROALL:
		s |= 0xffff << X0
	}
	for _, p := range in.Prefix {
		if p == 0 {
			break
		}
		if p&0xff == x86asm.PrefixREP&0xff || p&0xff == x86asm.PrefixREPN&0xff {
			switch in.Op {
			case x86asm.MOVSB, x86asm.MOVSW, x86asm.MOVSD, x86asm.MOVSQ, x86asm.STOSB, x86asm.STOSW, x86asm.STOSD, x86asm.STOSQ,
				x86asm.CMPSB, x86asm.CMPSW, x86asm.CMPSD, x86asm.CMPSQ, x86asm.SCASB, x86asm.SCASW, x86asm.SCASD, x86asm.SCASQ,
				x86asm.LODSB, x86asm.LODSW, x86asm.LODSD, x86asm.LODSQ:
				if in.Args[0] == nil || m == Over {
					s |= 1 << RCX
				}
			}
		}
	}
	return s
}

// oneOperand reports a multiplication or division whose one operand is
// only read (it writes rax and rdx).
func oneOperand(in x86asm.Inst) bool {
	switch in.Op {
	case x86asm.MUL, x86asm.DIV, x86asm.IDIV, x86asm.IMUL:
		return in.Args[1] == nil
	}
	return false
}

// regSet is the register r is part of.
func regSet(r x86asm.Reg) Set {
	switch {
	case r >= x86asm.AL && r <= x86asm.BL:
		return 1 << (r - x86asm.AL)
	case r >= x86asm.AH && r <= x86asm.BH:
		return 1 << (r - x86asm.AH)
	case r >= x86asm.SPB && r <= x86asm.R15B:
		return 1 << (r - x86asm.SPB + 4)
	case r >= x86asm.AX && r <= x86asm.R15W:
		return 1 << (r - x86asm.AX)
	case r >= x86asm.EAX && r <= x86asm.R15L:
		return 1 << (r - x86asm.EAX)
	case r >= x86asm.RAX && r <= x86asm.R15:
		return 1 << (r - x86asm.RAX)
	case r >= x86asm.X0 && r <= x86asm.X15:
		return 1 << (X0 + int(r-x86asm.X0))
	case r >= x86asm.Y0 && r <= x86asm.Y15:
		return 1 << (X0 + int(r-x86asm.Y0))
	case r >= x86asm.Z0 && r <= x86asm.Z15:
		return 1 << (X0 + int(r-x86asm.Z0))
	}
	return 0
}
