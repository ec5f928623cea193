package unwind

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The DWARF expressions found in x86-64 CFI are small: glibc's signal
// trampoline uses DW_OP_breg7 (+ DW_OP_deref), and the CFA of .plt entries is
// rsp+8 + ((rip&15) >= 11) << 3. eval implements the stack machine's
// arithmetic, constants, register and memory operations; anything else
// (DW_OP_regN locations, calls, TLS, typed ops) is an error, which the
// caller reports as ErrIncomplete.

const (
	maxExprStack = 64
	maxExprSteps = 10000 // DW_OP_bra/skip can loop
)

// eval evaluates a DWARF expression with the registers rs. If push is not
// nil its value (the CFA, for DW_CFA_expression rules) starts on the stack.
func (u *Unwinder) eval(expr []byte, rs *regState, push *uint64) (uint64, error) {
	var stack []uint64
	if push != nil {
		stack = append(stack, *push)
	}
	pop := func() (uint64, error) {
		if len(stack) == 0 {
			return 0, errors.New("DWARF expression stack underflow")
		}
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		return v, nil
	}
	c := &cursor{b: expr}
	fixed := func(n int) (uint64, error) {
		if c.left() < n {
			return 0, errTrunc
		}
		var b [8]byte
		copy(b[:], c.b[c.off:c.off+n])
		c.off += n
		return binary.LittleEndian.Uint64(b[:]), nil
	}
	for steps := 0; c.left() > 0; steps++ {
		if steps >= maxExprSteps {
			return 0, errors.New("DWARF expression does not terminate")
		}
		if len(stack) > maxExprStack {
			return 0, errors.New("DWARF expression stack overflow")
		}
		op, _ := c.byte()
		var err error
		switch {
		case op >= 0x30 && op <= 0x4f: // DW_OP_lit0..31
			stack = append(stack, uint64(op-0x30))
			continue
		case op >= 0x70 && op <= 0x8f, op == 0x92: // DW_OP_breg0..31, DW_OP_bregx
			reg := uint64(op - 0x70)
			if op == 0x92 {
				if reg, err = c.uleb(); err != nil {
					return 0, err
				}
			}
			off, err := c.sleb()
			if err != nil {
				return 0, err
			}
			v, ok := rs.get(reg)
			if !ok {
				return 0, fmt.Errorf("DWARF expression uses register %d, unknown here", reg)
			}
			stack = append(stack, v+uint64(off))
			continue
		}
		var v uint64
		switch op {
		case 0x03: // addr
			v, err = fixed(8)
		case 0x08: // const1u
			v, err = fixed(1)
		case 0x09: // const1s
			v, err = fixed(1)
			v = uint64(int8(v))
		case 0x0a: // const2u
			v, err = fixed(2)
		case 0x0b: // const2s
			v, err = fixed(2)
			v = uint64(int16(v))
		case 0x0c: // const4u
			v, err = fixed(4)
		case 0x0d: // const4s
			v, err = fixed(4)
			v = uint64(int32(v))
		case 0x0e, 0x0f: // const8u, const8s
			v, err = fixed(8)
		case 0x10: // constu
			v, err = c.uleb()
		case 0x11: // consts
			var s int64
			s, err = c.sleb()
			v = uint64(s)
		case 0x12: // dup
			if len(stack) == 0 {
				return 0, errors.New("DWARF expression stack underflow")
			}
			v = stack[len(stack)-1]
		case 0x13: // drop
			_, err = pop()
			if err != nil {
				return 0, err
			}
			continue
		case 0x14, 0x15: // over, pick
			idx := uint64(1)
			if op == 0x15 {
				idx, err = fixed(1)
			}
			if err == nil && idx >= uint64(len(stack)) {
				err = errors.New("DWARF expression stack underflow")
			}
			if err == nil {
				v = stack[len(stack)-1-int(idx)]
			}
		case 0x16: // swap
			if len(stack) < 2 {
				return 0, errors.New("DWARF expression stack underflow")
			}
			n := len(stack)
			stack[n-1], stack[n-2] = stack[n-2], stack[n-1]
			continue
		case 0x17: // rot
			if len(stack) < 3 {
				return 0, errors.New("DWARF expression stack underflow")
			}
			n := len(stack)
			stack[n-1], stack[n-2], stack[n-3] = stack[n-2], stack[n-3], stack[n-1]
			continue
		case 0x06, 0x94: // deref, deref_size
			size := uint64(8)
			if op == 0x94 {
				if size, err = fixed(1); err != nil {
					return 0, err
				}
				if size == 0 || size > 8 {
					return 0, fmt.Errorf("DW_OP_deref_size %d", size)
				}
			}
			addr, err := pop()
			if err != nil {
				return 0, err
			}
			var b [8]byte
			if err := u.mem.ReadMem(addr, b[:size]); err != nil {
				return 0, fmt.Errorf("read %#x: %w", addr, err)
			}
			v = binary.LittleEndian.Uint64(b[:])
		case 0x19, 0x1f, 0x20: // abs, neg, not
			a, err := pop()
			if err != nil {
				return 0, err
			}
			switch op {
			case 0x19:
				if int64(a) < 0 {
					a = -a
				}
			case 0x1f:
				a = -a
			case 0x20:
				a = ^a
			}
			v = a
		case 0x23: // plus_uconst
			a, err := pop()
			if err != nil {
				return 0, err
			}
			n, err := c.uleb()
			if err != nil {
				return 0, err
			}
			v = a + n
		case 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27,
			0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e:
			b, err := pop()
			if err != nil {
				return 0, err
			}
			a, err := pop()
			if err != nil {
				return 0, err
			}
			if v, err = binop(op, a, b); err != nil {
				return 0, err
			}
		case 0x28, 0x2f: // bra, skip
			d, err := fixed(2)
			if err != nil {
				return 0, err
			}
			take := true
			if op == 0x28 {
				cond, err := pop()
				if err != nil {
					return 0, err
				}
				take = cond != 0
			}
			if take {
				to := c.off + int(int16(d))
				if to < 0 || to > len(c.b) {
					return 0, errors.New("DWARF expression branches out of bounds")
				}
				c.off = to
			}
			continue
		case 0x96: // nop
			continue
		default:
			return 0, fmt.Errorf("unsupported DWARF expression opcode %#x", op)
		}
		if err != nil {
			return 0, err
		}
		stack = append(stack, v)
	}
	return pop()
}

func binop(op byte, a, b uint64) (uint64, error) {
	flag := func(x bool) uint64 {
		if x {
			return 1
		}
		return 0
	}
	switch op {
	case 0x1a:
		return a & b, nil
	case 0x1b: // div (signed)
		if b == 0 || int64(b) == -1 {
			if b == 0 {
				return 0, errors.New("DWARF expression divides by zero")
			}
			return -a, nil
		}
		return uint64(int64(a) / int64(b)), nil
	case 0x1c:
		return a - b, nil
	case 0x1d: // mod (unsigned)
		if b == 0 {
			return 0, errors.New("DWARF expression divides by zero")
		}
		return a % b, nil
	case 0x1e:
		return a * b, nil
	case 0x21:
		return a | b, nil
	case 0x22:
		return a + b, nil
	case 0x24:
		if b >= 64 {
			return 0, nil
		}
		return a << b, nil
	case 0x25:
		if b >= 64 {
			return 0, nil
		}
		return a >> b, nil
	case 0x26:
		return uint64(int64(a) >> min(b, 63)), nil
	case 0x27:
		return a ^ b, nil
	case 0x29:
		return flag(a == b), nil
	case 0x2a:
		return flag(int64(a) >= int64(b)), nil
	case 0x2b:
		return flag(int64(a) > int64(b)), nil
	case 0x2c:
		return flag(int64(a) <= int64(b)), nil
	case 0x2d:
		return flag(int64(a) < int64(b)), nil
	case 0x2e:
		return flag(a != b), nil
	}
	return 0, fmt.Errorf("unsupported DWARF expression opcode %#x", op)
}
