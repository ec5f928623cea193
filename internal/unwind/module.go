package unwind

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/go-delve/delve/pkg/dwarf/frame"

	"livesplice/internal/procfs"
)

// maxEHFrame caps the size of an .eh_frame we are willing to parse, so a
// corrupt section header cannot make us allocate gigabytes.
const maxEHFrame = 256 << 20

// maxVDSO caps the [vdso] image read from the target's memory.
const maxVDSO = 1 << 20

// module is the CFI of one mapped ELF file, in link-time addresses: FDEs
// are parsed with the .eh_frame's sh_addr as its address and staticBase 0,
// so a pc is looked up as pc minus the load bias, and the same parse serves
// every mapping of the file whatever its bias.
type module struct {
	name  string
	fdes  frame.FrameDescriptionEntries // sorted by Begin
	loads []elf.ProgHeader              // PT_LOAD headers, in file order
	err   error                         // load error, cached so it is not retried
}

// fdeFor finds the FDE covering pc (an absolute address in the target) and
// returns it with the load bias of its module. name names the module for
// error messages.
func (u *Unwinder) fdeFor(pc uint64) (fde *frame.FrameDescriptionEntry, bias uint64, name string, err error) {
	m, ok := u.mapping(pc)
	if !ok {
		return nil, 0, "unmapped memory", errors.New("no mapping")
	}
	name = m.Path
	if name == "" {
		name = "anonymous memory"
	}
	if m.Path != "[vdso]" && m.Inode == 0 {
		if mod := u.placed(pc); mod != nil {
			if fde, err = mod.fdes.FDEForPC(pc); err == nil && fde.CIE != nil {
				return fde, 0, mod.name, nil
			}
			return nil, 0, mod.name, fmt.Errorf("no FDE for %#x", pc)
		}
		// JIT code, trampolines written by a patcher, ...: nothing
		// describes how to unwind it.
		return nil, 0, name, fmt.Errorf("no FDE: not file-backed (%s %#x-%#x)", m.Perms, m.Start, m.End)
	}
	mod := u.module(m)
	if mod.err != nil {
		return nil, 0, name, mod.err
	}
	bias, err = u.bias(m, mod)
	if err != nil {
		return nil, 0, name, err
	}
	fde, err = mod.fdes.FDEForPC(pc - bias)
	if err != nil {
		return nil, 0, name, fmt.Errorf("no FDE (link-time pc %#x)", pc-bias)
	}
	if fde.CIE == nil {
		return nil, 0, name, errors.New("FDE without CIE")
	}
	return fde, bias, name, nil
}

// AddFrames gives the unwinder the call frame information of code placed
// in anonymous memory [start,end) (a live patch's new code): ehFrame is an
// .eh_frame image as it lies at ehAddr in the target.
func (u *Unwinder) AddFrames(name string, start, end uint64, ehFrame []byte, ehAddr uint64) error {
	if len(ehFrame) > maxEHFrame {
		return fmt.Errorf("%s: .eh_frame of %d bytes is too large", name, len(ehFrame))
	}
	fdes, err := parseEHFrame(ehFrame, ehAddr)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.extra = append(u.extra, placedCode{start, end, &module{name: name, fdes: fdes}})
	return nil
}

// placedCode is code without a file whose CFI was given with AddFrames.
type placedCode struct {
	start, end uint64
	mod        *module
}

func (u *Unwinder) placed(pc uint64) *module {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, p := range u.extra {
		if pc >= p.start && pc < p.end && len(p.mod.fdes) > 0 {
			if _, err := p.mod.fdes.FDEForPC(pc); err == nil {
				return p.mod
			}
		}
	}
	return nil
}

// module returns the (possibly cached) CFI of the file mapped at m.
func (u *Unwinder) module(m procfs.Mapping) *module {
	key := m.Dev + ":" + strconv.FormatUint(m.Inode, 10) + ":" + m.Path
	if m.Path == "[vdso]" {
		// Not a file: its image lives in the target's memory.
		key = "[vdso]@" + strconv.FormatUint(m.Start, 16)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if mod := u.mods[key]; mod != nil {
		return mod
	}
	mod := &module{name: m.Path}
	if m.Path == "[vdso]" {
		mod.err = mod.loadVDSO(u.mem, m)
	} else {
		mod = loadShared(u.pid, m) // shared.go
	}
	u.mods[key] = mod
	return mod
}

func (mod *module) loadFile(pid int, m procfs.Mapping) error {
	f, err := procfs.OpenMapped(pid, m)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	return mod.loadELF(io.NewSectionReader(f, 0, st.Size()))
}

func (mod *module) loadVDSO(mem Memory, m procfs.Mapping) error {
	size := m.End - m.Start
	if size > maxVDSO {
		return fmt.Errorf("[vdso] of %d bytes is too large", size)
	}
	img := make([]byte, size)
	if err := mem.ReadMem(m.Start, img); err != nil {
		return fmt.Errorf("read [vdso]: %w", err)
	}
	return mod.loadELF(bytes.NewReader(img))
}

func (mod *module) loadELF(r io.ReaderAt) error {
	f, err := elf.NewFile(r)
	if err != nil {
		return err
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || f.ByteOrder != binary.LittleEndian {
		return fmt.Errorf("not an x86-64 ELF file")
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			mod.loads = append(mod.loads, p.ProgHeader)
		}
	}
	if len(mod.loads) == 0 {
		return errors.New("no PT_LOAD segment")
	}
	data, addr, err := ehFrame(f)
	if err != nil {
		return err
	}
	mod.fdes, err = parseEHFrame(data, addr)
	return err
}

// ehFrame returns the contents of the .eh_frame section and its link-time
// address. Without section headers (stripped with sstrip, some loaders'
// images) it finds .eh_frame through PT_GNU_EH_FRAME, as libgcc does.
func ehFrame(f *elf.File) ([]byte, uint64, error) {
	if s := f.Section(".eh_frame"); s != nil && s.Type == elf.SHT_PROGBITS {
		if s.Size > maxEHFrame {
			return nil, 0, fmt.Errorf(".eh_frame of %d bytes is too large", s.Size)
		}
		data, err := s.Data()
		if err != nil {
			return nil, 0, fmt.Errorf("read .eh_frame: %w", err)
		}
		return data, s.Addr, nil
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_GNU_EH_FRAME {
			continue
		}
		addr, err := ehFramePtr(p)
		if err != nil {
			return nil, 0, err
		}
		for _, l := range f.Progs {
			if l.Type != elf.PT_LOAD || addr < l.Vaddr || addr-l.Vaddr >= l.Filesz {
				continue
			}
			n := min(l.Filesz-(addr-l.Vaddr), maxEHFrame)
			data := make([]byte, n)
			if _, err := l.ReadAt(data, int64(addr-l.Vaddr)); err != nil && err != io.EOF {
				return nil, 0, fmt.Errorf("read .eh_frame: %w", err)
			}
			return trimEHFrame(data), addr, nil
		}
		return nil, 0, fmt.Errorf(".eh_frame at %#x is not in a PT_LOAD segment", addr)
	}
	return nil, 0, errors.New("no .eh_frame")
}

// ehFramePtr decodes eh_frame_ptr from an .eh_frame_hdr.
func ehFramePtr(p *elf.Prog) (uint64, error) {
	var hdr [12]byte
	if p.Filesz < 8 {
		return 0, errors.New(".eh_frame_hdr too short")
	}
	n, _ := p.ReadAt(hdr[:min(p.Filesz, 12)], 0)
	if n < 8 || hdr[0] != 1 {
		return 0, errors.New("bad .eh_frame_hdr")
	}
	enc := hdr[1]
	var v uint64
	switch enc & 0x0f {
	case 0x03: // udata4
		v = uint64(binary.LittleEndian.Uint32(hdr[4:]))
	case 0x0b: // sdata4
		v = uint64(int64(int32(binary.LittleEndian.Uint32(hdr[4:]))))
	case 0x00, 0x04, 0x0c: // absptr, udata8, sdata8
		if n < 12 {
			return 0, errors.New("bad .eh_frame_hdr")
		}
		v = binary.LittleEndian.Uint64(hdr[4:])
	default:
		return 0, fmt.Errorf("unsupported eh_frame_ptr encoding %#x", enc)
	}
	switch enc & 0x70 {
	case 0x00:
	case 0x10: // pcrel: relative to the field itself
		v += p.Vaddr + 4
	case 0x30: // datarel: relative to .eh_frame_hdr
		v += p.Vaddr
	default:
		return 0, fmt.Errorf("unsupported eh_frame_ptr encoding %#x", enc)
	}
	return v, nil
}

// trimEHFrame cuts data at the zero terminator of .eh_frame, so what follows
// the section in its segment is not parsed as CFI.
func trimEHFrame(data []byte) []byte {
	off := 0
	for off+4 <= len(data) {
		l := binary.LittleEndian.Uint32(data[off:])
		if l == 0 || l == 0xffffffff || uint64(l) > uint64(len(data)-off-4) {
			break
		}
		off += 4 + int(l)
	}
	return data[:off]
}

// parseEHFrame validates and parses an .eh_frame section whose link-time
// address is addr. FDE addresses in the result are link-time addresses.
func parseEHFrame(data []byte, addr uint64) (frame.FrameDescriptionEntries, error) {
	if addr == 0 {
		// delve takes ehFrameAddr 0 to mean .debug_frame.
		return nil, errors.New(".eh_frame at address 0")
	}
	if err := checkEHFrame(data); err != nil {
		return nil, fmt.Errorf("bad .eh_frame: %w", err)
	}
	// staticBase 0: FDE addresses stay link-time addresses (pc-relative
	// ones resolved against addr), and setloc operands are not moved.
	fdes, err := frame.Parse(data, binary.LittleEndian, 0, 8, addr)
	if err != nil {
		return nil, fmt.Errorf("parse .eh_frame: %w", err)
	}
	// Parse keeps file order; FDEForPC needs them sorted (Append sorts and
	// drops duplicates).
	return frame.FrameDescriptionEntries(nil).Append(fdes), nil
}

// bias returns the load bias of the module mapped at m: the start of its
// mapping with file offset 0 minus its first PT_LOAD's vaddr rounded down
// to the page. If no such mapping is found (the first page was unmapped),
// it is derived from m and the PT_LOAD that m maps.
func (u *Unwinder) bias(m procfs.Mapping, mod *module) (uint64, error) {
	page := uint64(os.Getpagesize())
	down := func(x uint64) uint64 { return x &^ (page - 1) }
	if m.Path == "[vdso]" {
		return m.Start - down(mod.loads[0].Vaddr), nil
	}
	first := mod.loads[0]
	if down(first.Off) == 0 {
		var base *procfs.Mapping
		for i := range u.maps {
			b := &u.maps[i]
			if b.Start > m.Start {
				break
			}
			// The nearest offset-0 mapping of the same file at or below m:
			// a file mapped twice has two biases.
			if b.Offset == 0 && b.Inode == m.Inode && b.Dev == m.Dev && b.Path == m.Path {
				base = b
			}
		}
		if base != nil {
			return base.Start - down(first.Vaddr), nil
		}
	}
	for _, p := range mod.loads {
		if m.Offset >= down(p.Off) && m.Offset < p.Off+p.Filesz {
			return m.Start - (down(p.Vaddr) + (m.Offset - down(p.Off))), nil
		}
	}
	return 0, fmt.Errorf("cannot find the load bias (mapping at file offset %#x)", m.Offset)
}
