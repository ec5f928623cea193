package process

import (
	"debug/elf"
	"encoding/binary"
	"fmt"

	"livesplice/internal/procfs"
)

// dynReloc is one dynamic relocation of a mapped object (link-time place).
type dynReloc struct {
	off    uint64
	typ    elf.R_X86_64
	sym    string // "" for symbol 0 (the object's own, by addend)
	addend int64
}

// dynRelocs reads the object's dynamic relocations (every allocated
// SHT_RELA section: .rela.dyn, .rela.plt) through /proc/PID/map_files,
// once per session.
func (m *module) dynRelocs(pid int) ([]dynReloc, error) {
	if m.relsRead {
		return m.rels, m.relsErr
	}
	m.relsRead = true
	m.rels, m.relsErr = readDynRelocs(pid, m)
	return m.rels, m.relsErr
}

func readDynRelocs(pid int, m *module) ([]dynReloc, error) {
	var first *procfs.Mapping
	for i := range m.maps {
		if m.maps[i].Offset == 0 {
			first = &m.maps[i]
			break
		}
	}
	if first == nil {
		return nil, fmt.Errorf("%s: no mapping of the ELF header", m.path)
	}
	fh, err := procfs.OpenMapped(pid, *first)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	f, err := elf.NewFile(fh)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.path, err)
	}
	defer f.Close()
	dyn, _ := f.DynamicSymbols()
	var out []dynReloc
	for _, sec := range f.Sections {
		if sec.Type != elf.SHT_RELA || sec.Flags&elf.SHF_ALLOC == 0 {
			continue
		}
		data, err := sec.Data()
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", m.path, sec.Name, err)
		}
		for len(data) >= 24 {
			info := binary.LittleEndian.Uint64(data[8:])
			r := dynReloc{off: binary.LittleEndian.Uint64(data), typ: elf.R_X86_64(info & 0xffffffff), addend: int64(binary.LittleEndian.Uint64(data[16:]))}
			if k := info >> 32; k > 0 && int(k) <= len(dyn) {
				r.sym = dyn[k-1].Name
			}
			out = append(out, r)
			data = data[24:]
		}
	}
	return out, nil
}

// noDynRelocs refuses running code in [lo, hi) that the dynamic loader
// relocated (a text relocation): a jump written there would be half ours.
func (s *session) noDynRelocs(mod *module, lo, hi uint64) error {
	rels, err := mod.dynRelocs(s.pid)
	if err != nil {
		return fmt.Errorf("read the dynamic relocations of %s: %w", mod.path, err)
	}
	for _, r := range rels {
		at := mod.bias + r.off
		if at < hi && lo < at+8 {
			return fmt.Errorf("the loader relocated the bytes at %#x (%v), where its entry jump would go", at, r.typ)
		}
	}
	return nil
}
