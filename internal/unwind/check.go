package unwind

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/go-delve/delve/pkg/dwarf/frame"
)

// delve's frame package trusts its input: a LEB128 number running off the
// end of its buffer, an FDE augmentation length past the FDE's end, a
// DW_CFA_restore_state without a matching remember_state, an expression
// block longer than 2^63, a truncated DW_CFA_advance_loc1 or an
// advance_loc2/4 in a CIE's initial instructions (parsed before the byte
// order is set) all panic. The checks below accept only well-formed input in
// which every field delve reads lies inside its entry, reading the same
// fields in the same order, so delve never gets to panic. They are stricter
// than delve in places (truncated entries, unknown augmentations), which
// loses nothing on real .eh_frame sections.

var errTrunc = errors.New("truncated")

// cursor reads a byte slice with bounds checks.
type cursor struct {
	b   []byte
	off int
}

func (c *cursor) left() int { return len(c.b) - c.off }

func (c *cursor) byte() (byte, error) {
	if c.off >= len(c.b) {
		return 0, errTrunc
	}
	c.off++
	return c.b[c.off-1], nil
}

func (c *cursor) skip(n uint64) error {
	if n > uint64(c.left()) {
		return errTrunc
	}
	c.off += int(n)
	return nil
}

func (c *cursor) uleb() (uint64, error) {
	var v uint64
	for shift := uint(0); ; shift += 7 {
		b, err := c.byte()
		if err != nil {
			return 0, err
		}
		if shift < 64 {
			v |= uint64(b&0x7f) << shift
		}
		if b&0x80 == 0 {
			return v, nil
		}
	}
}

func (c *cursor) sleb() (int64, error) {
	var v int64
	shift := uint(0)
	for {
		b, err := c.byte()
		if err != nil {
			return 0, err
		}
		if shift < 64 {
			v |= int64(b&0x7f) << shift
		}
		shift += 7
		if b&0x80 == 0 {
			if shift < 64 && b&0x40 != 0 {
				v |= -1 << shift
			}
			return v, nil
		}
	}
}

func (c *cursor) cstring() (string, error) {
	for i := c.off; i < len(c.b); i++ {
		if c.b[i] == 0 {
			s := string(c.b[c.off:i])
			c.off = i + 1
			return s, nil
		}
	}
	return "", errTrunc
}

// encodedPtr skips a pointer encoded with enc the way delve reads it.
func (c *cursor) encodedPtr(enc byte) error {
	if enc == 0xff { // DW_EH_PE_omit
		return nil
	}
	switch enc & 0x0f {
	case 0x00, 0x08, 0x04, 0x0c: // absptr, signed, udata8, sdata8
		return c.skip(8)
	case 0x01:
		_, err := c.uleb()
		return err
	case 0x09:
		_, err := c.sleb()
		return err
	case 0x02, 0x0a:
		return c.skip(2)
	case 0x03, 0x0b:
		return c.skip(4)
	}
	return fmt.Errorf("bad pointer encoding %#x", enc)
}

// ptrEncSupported mirrors delve's ptrEnc.Supported: known size, and no flag
// but pc-relative.
func ptrEncSupported(enc byte) bool {
	if enc == 0xff {
		return true
	}
	sz := enc & 0x0f
	if sz > 0x04 && sz < 0x08 || sz > 0x0c {
		return false
	}
	return enc&0xf0&^0x10 == 0
}

type cieInfo struct {
	aug    string
	ptrEnc byte
}

// checkEHFrame checks that data is a well-formed .eh_frame section that
// delve can parse without panicking.
func checkEHFrame(data []byte) error {
	cies := map[int]cieInfo{}
	off := 0
	for len(data)-off >= 4 {
		start := off
		length := binary.LittleEndian.Uint32(data[off:])
		off += 4
		if length == 0 {
			continue // terminator; delve skips it too
		}
		if length == 0xffffffff {
			return fmt.Errorf("entry at %#x: 64-bit DWARF is not supported", start)
		}
		if length < 4 || uint64(length) > uint64(len(data)-off) {
			return fmt.Errorf("entry at %#x: bad length %#x", start, length)
		}
		id := binary.LittleEndian.Uint32(data[off:])
		body := &cursor{b: data[off+4 : off+int(length)]}
		off += int(length)
		if id == 0 {
			cie, err := checkCIE(body)
			if err != nil {
				return fmt.Errorf("CIE at %#x: %w", start, err)
			}
			cies[start] = cie
			continue
		}
		cieOff := start + 4 - int(id)
		cie, ok := cies[cieOff]
		if !ok {
			return fmt.Errorf("FDE at %#x: no CIE at %#x", start, cieOff)
		}
		if err := checkFDE(body, cie); err != nil {
			return fmt.Errorf("FDE at %#x: %w", start, err)
		}
	}
	return nil
}

func checkCIE(c *cursor) (cieInfo, error) {
	var info cieInfo
	version, err := c.byte()
	if err != nil {
		return info, err
	}
	if version != 1 && version != 3 {
		return info, fmt.Errorf("version %d", version)
	}
	if info.aug, err = c.cstring(); err != nil {
		return info, err
	}
	if info.aug != "" && info.aug[0] != 'z' {
		return info, fmt.Errorf("unsupported augmentation %q", info.aug)
	}
	if _, err := c.uleb(); err != nil { // code alignment
		return info, err
	}
	if _, err := c.sleb(); err != nil { // data alignment
		return info, err
	}
	if version == 1 {
		_, err = c.byte()
	} else {
		_, err = c.uleb()
	}
	if err != nil { // return address column
		return info, err
	}
	if info.aug != "" {
		if _, err := c.uleb(); err != nil { // augmentation data length
			return info, err
		}
	}
	for i := 1; i < len(info.aug); i++ {
		switch info.aug[i] {
		case 'L':
			if _, err := c.byte(); err != nil {
				return info, err
			}
		case 'R':
			if info.ptrEnc, err = c.byte(); err != nil {
				return info, err
			}
			if !ptrEncSupported(info.ptrEnc) {
				return info, fmt.Errorf("unsupported FDE pointer encoding %#x", info.ptrEnc)
			}
		case 'S':
		case 'P':
			enc, err := c.byte()
			if err != nil {
				return info, err
			}
			enc &^= 0x80 // indirect
			if !ptrEncSupported(enc) {
				return info, fmt.Errorf("unsupported personality encoding %#x", enc)
			}
			if err := c.encodedPtr(enc); err != nil {
				return info, err
			}
		default:
			return info, fmt.Errorf("unsupported augmentation %q", info.aug)
		}
	}
	// Initial instructions are checked with the FDE's, before each use.
	return info, nil
}

func checkFDE(c *cursor, cie cieInfo) error {
	if err := c.encodedPtr(cie.ptrEnc); err != nil { // initial location
		return err
	}
	if cie.ptrEnc != 0xff {
		if err := c.encodedPtr(cie.ptrEnc & 0x0f); err != nil { // address range
			return err
		}
	}
	if cie.aug != "" {
		n, err := c.uleb()
		if err != nil {
			return err
		}
		if err := c.skip(n); err != nil {
			return fmt.Errorf("augmentation data: %w", err)
		}
	}
	return nil
}

// checkCFA checks a CFA program: every operand is complete, every
// restore_state has a matching remember_state (depth counts the states
// remembered before it), and only opcodes delve interprets correctly for
// .eh_frame appear. inCIE forbids the opcodes that need the byte order,
// which delve has not set yet when it runs a CIE's initial instructions.
// undefRA reports a DW_CFA_undefined of the return address column.
func checkCFA(prog []byte, inCIE bool, depth int) (_ int, undefRA bool, err error) {
	c := &cursor{b: prog}
	for c.left() > 0 {
		op, _ := c.byte()
		switch op & 0xc0 {
		case 0x40: // advance_loc
			continue
		case 0x80: // offset
			_, err = c.uleb()
		case 0xc0: // restore
			continue
		default:
			switch op {
			case frame.DW_CFA_nop:
			case frame.DW_CFA_remember_state:
				depth++
			case frame.DW_CFA_restore_state:
				if depth == 0 {
					return 0, false, errors.New("DW_CFA_restore_state without remember_state")
				}
				depth--
			case frame.DW_CFA_advance_loc1:
				err = c.skip(1)
			case frame.DW_CFA_advance_loc2, frame.DW_CFA_advance_loc4:
				if inCIE {
					return 0, false, fmt.Errorf("CFA opcode %#x in a CIE", op)
				}
				if op == frame.DW_CFA_advance_loc2 {
					err = c.skip(2)
				} else {
					err = c.skip(4)
				}
			case frame.DW_CFA_undefined:
				var reg uint64
				reg, err = c.uleb()
				undefRA = undefRA || reg == regRA
			case frame.DW_CFA_restore_extended, frame.DW_CFA_same_value,
				frame.DW_CFA_def_cfa_register, frame.DW_CFA_def_cfa_offset, frame.DW_CFA_GNU_args_size:
				_, err = c.uleb()
			case frame.DW_CFA_def_cfa_offset_sf:
				_, err = c.sleb()
			case frame.DW_CFA_offset_extended, frame.DW_CFA_register, frame.DW_CFA_def_cfa, frame.DW_CFA_val_offset:
				if _, err = c.uleb(); err == nil {
					_, err = c.uleb()
				}
			case frame.DW_CFA_offset_extended_sf, frame.DW_CFA_def_cfa_sf, frame.DW_CFA_val_offset_sf:
				if _, err = c.uleb(); err == nil {
					_, err = c.sleb()
				}
			case frame.DW_CFA_def_cfa_expression:
				err = c.block()
			case frame.DW_CFA_expression, frame.DW_CFA_val_expression:
				if _, err = c.uleb(); err == nil {
					err = c.block()
				}
			default:
				// DW_CFA_set_loc (delve reads it as an 8-byte absolute
				// address, not with the FDE's encoding), lo_user/hi_user
				// (not real opcodes) and unknown opcodes.
				return 0, false, fmt.Errorf("unsupported CFA opcode %#x", op)
			}
		}
		if err != nil {
			return 0, false, fmt.Errorf("CFA opcode %#x: %w", op, err)
		}
	}
	return depth, undefRA, nil
}

// block skips a ULEB128 length and that many bytes.
func (c *cursor) block() error {
	n, err := c.uleb()
	if err != nil {
		return err
	}
	return c.skip(n)
}

// establish runs the CFA program of fde up to pc (a link-time address)
// after checking it cannot make delve panic. undefRA reports whether the
// CIE or FDE marks the return address undefined explicitly: delve also
// reports "undefined" for a register after DW_CFA_restore (it does not keep
// the CIE's initial rules), which must not be taken for the end of the stack.
func establish(fde *frame.FrameDescriptionEntry, pc uint64) (fctx *frame.FrameContext, undefRA bool, err error) {
	if fde.CIE == nil {
		return nil, false, errors.New("FDE without CIE")
	}
	depth, undefCIE, err := checkCFA(fde.CIE.InitialInstructions, true, 0)
	if err != nil {
		return nil, false, fmt.Errorf("CIE: %w", err)
	}
	_, undefFDE, err := checkCFA(fde.Instructions, false, depth)
	if err != nil {
		return nil, false, fmt.Errorf("FDE at %#x: %w", fde.Begin(), err)
	}
	fctx, err = fde.EstablishFrame(pc)
	if err != nil {
		return nil, false, fmt.Errorf("FDE at %#x: %w", fde.Begin(), err)
	}
	return fctx, undefCIE || undefFDE, nil
}
