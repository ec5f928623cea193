package process

import (
	"debug/elf"

	"livesplice/internal/elfsym"
	"livesplice/internal/update"
)

// useSymtab gives a stripped module the symbol table an update recovered
// for it (docs/deb.md), but only if the mapped file is the very file the
// table was recovered for: the same GNU build-id. Any other file keeps
// what it has, and run-pre matching refuses the static functions it
// cannot find there, by name.
func (m *module) useSymtab(pid int, st *update.Symtab) {
	if st == nil || m.table == nil || !m.table.Stripped || moduleBuildID(pid, m, nil) != st.BuildID {
		return
	}
	syms := make([]elfsym.Sym, 0, len(st.Symbols))
	for _, y := range st.Symbols {
		s := elfsym.Sym{Name: y.Name, File: y.File, Value: y.Addr, Size: y.Size, Type: elf.STT_OBJECT, Bind: elf.STB_LOCAL}
		if y.Func {
			s.Type = elf.STT_FUNC
		}
		if y.Global {
			s.Bind, s.File = elf.STB_GLOBAL, ""
		}
		syms = append(syms, s)
	}
	m.table = m.table.WithSymbols(syms)
}
