package process

import (
	"debug/elf"
	"fmt"
	"path/filepath"
	"strings"

	"livesplice/internal/elfsym"
	"livesplice/internal/procfs"
)

// module is one ELF object mapped into the target.
type module struct {
	path  string
	maps  []procfs.Mapping
	bias  uint64
	table *elfsym.Table
	// dynamic relocations, read on demand (dynrel.go)
	rels     []dynReloc
	relsErr  error
	relsRead bool
}

func (m *module) start() uint64 { return m.maps[0].Start }
func (m *module) end() uint64   { return m.maps[len(m.maps)-1].End }

// fileMapped reports a mapping of a real file (not [heap], memfd, ...).
func fileMapped(m procfs.Mapping) bool {
	return strings.HasPrefix(m.Path, "/") && !strings.HasPrefix(m.Path, "/memfd:") && m.Inode != 0
}

// modules groups the file mappings by path, in address order.
func modules(maps []procfs.Mapping) []*module {
	var out []*module
	byPath := map[string]*module{}
	for _, m := range maps {
		if !fileMapped(m) {
			continue
		}
		mod, ok := byPath[m.Path]
		if !ok {
			mod = &module{path: m.Path}
			byPath[m.Path] = mod
			out = append(out, mod)
		}
		mod.maps = append(mod.maps, m)
	}
	return out
}

// load reads the module's symbols through /proc/PID/map_files.
func (m *module) load(pid int) error {
	if m.table != nil {
		return nil
	}
	var first *procfs.Mapping
	for i := range m.maps {
		if m.maps[i].Offset == 0 {
			first = &m.maps[i]
			break
		}
	}
	if first == nil {
		return fmt.Errorf("%s: no mapping of the ELF header", m.path)
	}
	f, err := procfs.OpenMapped(pid, *first)
	if err != nil {
		return err
	}
	defer f.Close()
	var magic [4]byte
	if _, err := f.ReadAt(magic[:], 0); err != nil || string(magic[:]) != elf.ELFMAG {
		return fmt.Errorf("%s: not an ELF file", m.path)
	}
	t, err := cachedTable(f)
	if err != nil {
		return fmt.Errorf("%s: %w", m.path, err)
	}
	m.table = t
	m.bias = first.Start - t.FirstLoad
	return nil
}

// findModule finds the mapped object an update target is for: by file
// name, or by soname for a shared library.
func findModule(pid int, mods []*module, path, soname string) (*module, error) {
	base := filepath.Base(path)
	var found []*module
	for _, m := range mods {
		if filepath.Base(m.path) == base {
			found = append(found, m)
			continue
		}
		if soname != "" && strings.Contains(filepath.Base(m.path), ".so") {
			if err := m.load(pid); err == nil && m.table.Soname == soname {
				found = append(found, m)
			}
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("%s: %w in process %d", base, ErrNotMapped, pid)
	case 1:
		return found[0], found[0].load(pid)
	}
	return nil, fmt.Errorf("%s: %d objects of that name are mapped in process %d", base, len(found), pid)
}
