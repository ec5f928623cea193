package amd64

import "encoding/binary"

// The .eh_frame encoder of the stubs livesplice writes (return stubs,
// register-preserving stubs): one CIE at offset 0, FDEs pointing back to
// it, each padded to 8 bytes with DW_CFA_nop.

// ehCIE is a CIE with version 1, augmentation "zR", code alignment 1,
// data alignment -8, return address column 16, FDE pointers pc-relative
// sdata4, and the initial instructions init.
func ehCIE(init ...byte) []byte {
	b := append([]byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 'z', 'R', 0, 1, 0x78, 16, 1, 0x1b}, init...)
	b = ehPad(b, 0)
	binary.LittleEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

// ehFDE appends an FDE for size bytes of code with the call frame
// instructions instrs to b (which starts with the CIE), and returns where
// its pc_begin field is (left 0: pc-relative, for the caller to fill).
func ehFDE(b []byte, size uint32, instrs []byte) ([]byte, int) {
	fde := len(b)
	b = append(b, 0, 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(fde+4)) // back to the CIE
	pc := len(b)
	b = append(b, 0, 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, size)
	b = append(b, 0) // no augmentation data
	b = append(b, instrs...)
	b = ehPad(b, fde)
	binary.LittleEndian.PutUint32(b[fde:], uint32(len(b)-fde-4))
	return b, pc
}

func ehPad(b []byte, start int) []byte {
	for (len(b)-start)%8 != 0 {
		b = append(b, 0) // DW_CFA_nop
	}
	return b
}

// cfaStep says that after the instruction ending at code offset at, the
// CFA is %rsp+off.
type cfaStep struct{ at, off int }

// cfaSteps appends to b, for each step in order, the advance to it and
// DW_CFA_def_cfa_offset.
func cfaSteps(b []byte, steps []cfaStep) []byte {
	last := 0
	for _, st := range steps {
		d := st.at - last
		switch {
		case d < 0x40:
			b = append(b, 0x40|byte(d)) // DW_CFA_advance_loc
		case d < 0x100:
			b = append(b, 0x02, byte(d)) // DW_CFA_advance_loc1
		default:
			b = append(b, 0x03, byte(d), byte(d>>8)) // DW_CFA_advance_loc2
		}
		last = st.at
		b = append(b, 0x0e) // DW_CFA_def_cfa_offset, uleb128
		for v := uint64(st.off); ; {
			x := byte(v & 0x7f)
			v >>= 7
			if v == 0 {
				b = append(b, x)
				break
			}
			b = append(b, x|0x80)
		}
	}
	return b
}
