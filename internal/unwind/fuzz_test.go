package unwind

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"livesplice/internal/procfs"
)

// fuzzMem is a fake stack: addresses in [base, base+len) read the fuzz
// input repeated, anything else fails.
type fuzzMem struct {
	base uint64
	data []byte
}

func (m fuzzMem) ReadMem(addr uint64, b []byte) error {
	if len(m.data) == 0 || addr < m.base || addr-m.base > 1<<20 || addr-m.base+uint64(len(b)) > 1<<20 {
		return errors.New("unmapped")
	}
	for i := range b {
		b[i] = m.data[(addr-m.base+uint64(i))%uint64(len(m.data))]
	}
	return nil
}

// minimalEHFrame is a CIE (zR, pcrel|sdata4) and one FDE covering
// [0x2000, 0x2100) with push rbp / mov rsp,rbp style rules, for an
// .eh_frame linked at 0x1000.
func minimalEHFrame() []byte {
	var b []byte
	le32 := func(v uint32) { b = binary.LittleEndian.AppendUint32(b, v) }
	// CIE: def_cfa rsp+8; offset r16 at cfa-8; nop padding.
	le32(20)
	le32(0)
	b = append(b, 1, 'z', 'R', 0, 1, 0x78, 16, 1, 0x1b)
	b = append(b, 0x0c, 7, 8, 0x90, 1, 0, 0)
	// FDE
	fde := len(b)
	le32(0) // length, set below
	le32(uint32(fde + 4))
	le32(uint32(0x2000 - (0x1000 + fde + 8))) // pc begin, pc-relative
	le32(0x100)
	b = append(b, 0)                       // augmentation data length
	b = append(b, 0x41, 0x0e, 16, 0x86, 2) // advance 1; def_cfa_offset 16; offset rbp cfa-16
	b = append(b, 0x43, 0x0d, 6, 0x0a)     // advance 3; def_cfa_register rbp; remember_state
	b = append(b, 0x4a, 0x0b)              // advance 10; restore_state
	b = append(b, 0x10, 3, 2, 0x73, 8)     // expression rbx: breg3 8
	b = append(b, 0x16, 12, 0)             // val_expression r12: empty
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	binary.LittleEndian.PutUint32(b[fde:], uint32(len(b)-fde-4))
	le32(0) // terminator
	return b
}

func FuzzUnwind(f *testing.F) {
	f.Add(minimalEHFrame(), uint64(0x2005))
	f.Add([]byte{}, uint64(0))
	f.Add([]byte{4, 0, 0, 0, 0, 0, 0, 0}, uint64(0x1000))
	// Known delve panics: an FDE augmentation length past the FDE, and a
	// CFA program that restores a state it never remembered.
	bad := minimalEHFrame()
	bad[24+16] = 0x7f // FDE augmentation data length
	f.Add(bad, uint64(0x2000))
	bad = minimalEHFrame()
	bad[24+17+8] = 0x0b // remember_state -> restore_state
	f.Add(bad, uint64(0x2010))
	if lf, err := elf.Open("/lib/x86_64-linux-gnu/libc.so.6"); err == nil {
		if s := lf.Section(".eh_frame"); s != nil {
			if data, err := s.Data(); err == nil && len(data) > 4096 {
				f.Add(data[:4096], uint64(0x2000))
			}
		}
		lf.Close()
	}

	const (
		start  = 0x400000
		ehAddr = 0x1000
		stack  = 0x7000_0000
	)
	mapping := procfs.Mapping{Start: start, End: start + 0x100000, Perms: "r-xp", Dev: "00:01", Inode: 1, Path: "/fuzz"}
	f.Fuzz(func(t *testing.T, data []byte, pc uint64) {
		fdes, err := parseEHFrame(data, ehAddr)
		if err != nil {
			return
		}
		for i, fde := range fdes {
			if i == 64 {
				break
			}
			for _, p := range []uint64{fde.Begin(), fde.Begin() + 1, fde.End() - 1, pc} {
				establish(fde, p)
			}
		}
		// The whole walk over the parsed table, with a stack made of the
		// same bytes.
		u := New(1, []procfs.Mapping{mapping}, fuzzMem{base: stack, data: data})
		u.mods["00:01:1:/fuzz"] = &module{
			name:  "/fuzz",
			fdes:  fdes,
			loads: []elf.ProgHeader{{Type: elf.PT_LOAD, Flags: elf.PF_R | elf.PF_X, Memsz: 0x100000, Filesz: 0x100000}},
		}
		regs := &unix.PtraceRegs{Rip: start + pc%0x100000, Rsp: stack + 64, Rbp: stack + 128, Rbx: stack}
		frames, err := u.Unwind(regs, 32)
		if err != nil && !errors.Is(err, ErrIncomplete) {
			t.Errorf("Unwind error %v does not wrap ErrIncomplete", err)
		}
		if len(frames) > 32 {
			t.Errorf("%d frames, max 32", len(frames))
		}
	})
}
