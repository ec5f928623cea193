package process

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"

	"livesplice/internal/procfs"
	"livesplice/internal/update"
)

// tlsValue is what new code needs for a thread-local variable that no
// replaced function's running code reaches the same way (update.TLSClass):
//
//   - tpoff, gottpoff (local and initial exec): the variable's offset from
//     the thread pointer, its module's static TLS block offset plus its
//     offset in the block. The block offset comes from a TPOFF64 slot the
//     loader filled for any variable of that module (the variable's own
//     slot is one), or else from the running thread's DTV entry of the
//     module (dtv[id] is the block: thread pointer minus its offset).
//   - dtpoff: its offset in its module's block (its symbol's value).
//   - tlsgd, tlsld (general and local dynamic): the address of a GOT pair
//     (module id, offset) for __tls_get_addr: the object's own, that its
//     dynamic relocations name, or one written into the update's read-only
//     part (pair, reserved by plan) with the module id read from any
//     DTPMOD64 slot of that module (the main program's is 1).
func (s *session) tlsValue(p *plan, si int) (uint64, error) {
	y := p.t.Symbols[si]
	class := y.Type[len("tls-"):]
	dm, v, err := s.tlsDef(p, y)
	if err != nil {
		return 0, err
	}
	switch class {
	case "dtpoff":
		return v, nil
	case "tpoff", "gottpoff":
		base, err := s.tlsBase(p, dm)
		if err != nil {
			return 0, err
		}
		return base + v, nil
	case "tlsgd", "tlsld":
		if class == "tlsld" {
			dm, v = p.mod, 0
		}
		if a, ok := s.gotPair(p.mod, dm, y.Name, v, class == "tlsld" || y.Kind == update.SymLocal); ok {
			return a, nil
		}
		off, ok := p.tlsPairs[si]
		if !ok {
			return 0, fmt.Errorf("no room for its module's GOT pair")
		}
		id, err := s.tlsModID(dm)
		if err != nil {
			return 0, err
		}
		binary.LittleEndian.PutUint64(p.images[1][off:], id)
		binary.LittleEndian.PutUint64(p.images[1][off+8:], v)
		return p.region.Addr + p.partOff[1] + off, nil
	}
	return 0, fmt.Errorf("unknown access %s", class)
}

// tlsDef finds the module that defines a thread-local variable and the
// variable's offset in that module's TLS block.
func (s *session) tlsDef(p *plan, y update.Symbol) (*module, uint64, error) {
	if y.Kind == update.SymLocal {
		var vals []uint64
		for _, g := range p.mod.table.Local(y.File, y.Name) {
			if g.Type == elf.STT_TLS {
				vals = append(vals, g.Value)
			}
		}
		if len(vals) != 1 {
			return nil, 0, fmt.Errorf("%d thread-local variables of that name in %s of %s", len(vals), y.File, p.mod.path)
		}
		return p.mod, vals[0], nil
	}
	for _, m := range append([]*module{p.mod}, s.mods...) {
		if m.load(s.pid) != nil {
			continue
		}
		for _, g := range m.table.Global(y.Name) {
			if g.Type == elf.STT_TLS {
				return m, g.Value, nil
			}
		}
	}
	return nil, 0, fmt.Errorf("no loaded object defines it")
}

// tlsBase is the offset of module dm's static TLS block from the thread
// pointer (negative on x86-64: the block lies below it).
func (s *session) tlsBase(p *plan, dm *module) (uint64, error) {
	if dm.table.TLS == nil {
		return 0, fmt.Errorf("%s has no TLS segment", dm.path)
	}
	for _, m := range append([]*module{dm, p.mod}, s.mods...) {
		if m.load(s.pid) != nil {
			continue
		}
		rels, err := m.dynRelocs(s.pid)
		if err != nil {
			continue
		}
		for _, r := range rels {
			if r.typ != elf.R_X86_64_TPOFF64 {
				continue
			}
			off, ok := s.tlsOffsetIn(m, dm, r)
			if !ok {
				continue
			}
			val, err := s.read64(m.bias + r.off)
			if err != nil {
				return 0, err
			}
			return val - off, nil
		}
	}
	// No slot names the module: its block, from the DTV of the thread
	// livesplice runs its system calls in.
	id, err := s.tlsModID(dm)
	if err != nil {
		return 0, fmt.Errorf("%s: no TPOFF64 slot of any loaded object shows where its static TLS block is, and %w", dm.path, err)
	}
	regs, err := s.p.GetRegs(s.worker)
	if err != nil {
		return 0, err
	}
	tp := regs.Fs_base
	dtv, err := s.read64(tp + 8)
	if err != nil {
		return 0, fmt.Errorf("read the thread's DTV: %w", err)
	}
	block, err := s.read64(dtv + 16*id)
	if err != nil {
		return 0, fmt.Errorf("read the thread's DTV: %w", err)
	}
	// A module in the static TLS area has its block just below the
	// thread pointer, in every thread at the same distance; one loaded
	// later (dlopen) has it elsewhere, and no fixed offset reaches it.
	if block == 0 || block >= tp || tp-block > 1<<20 {
		return 0, fmt.Errorf("%s: its TLS block (module %d) is not in the static TLS area (%#x, thread pointer %#x): no fixed offset from the thread pointer reaches it", dm.path, id, block, tp)
	}
	return block - tp, nil
}

// tlsOffsetIn reports whether dynamic relocation r of module m is about a
// variable of module dm, and the variable's offset (plus addend) in dm's
// block: symbol 0 stands for m's own block.
func (s *session) tlsOffsetIn(m, dm *module, r dynReloc) (uint64, bool) {
	if r.sym == "" {
		return uint64(r.addend), m == dm
	}
	for _, g := range dm.table.Global(r.sym) {
		if g.Type == elf.STT_TLS {
			return g.Value + uint64(r.addend), true
		}
	}
	return 0, false
}

// tlsModID is module dm's TLS module id: 1 for the main program, else
// what the loader wrote into a DTPMOD64 slot for one of its variables.
func (s *session) tlsModID(dm *module) (uint64, error) {
	if exe, err := os.Readlink(procfs.Dir(s.pid) + "/exe"); err == nil && exe == dm.path && dm.table.TLS != nil {
		return 1, nil
	}
	for _, m := range append([]*module{dm}, s.mods...) {
		if m.load(s.pid) != nil {
			continue
		}
		rels, err := m.dynRelocs(s.pid)
		if err != nil {
			continue
		}
		for _, r := range rels {
			if r.typ != elf.R_X86_64_DTPMOD64 {
				continue
			}
			if _, ok := s.tlsOffsetIn(m, dm, r); !ok {
				continue
			}
			return s.read64(m.bias + r.off)
		}
	}
	return 0, fmt.Errorf("no DTPMOD64 slot of any loaded object shows its module id")
}

// gotPair finds in module m's GOT the pair (module id, offset) that the
// loader filled for a variable of module dm: by name, or for a static
// variable or the module's own block (anon) a symbol-0 pair whose offset
// slot holds v.
func (s *session) gotPair(m, dm *module, name string, v uint64, anon bool) (uint64, bool) {
	rels, err := m.dynRelocs(s.pid)
	if err != nil {
		return 0, false
	}
	offs := map[uint64]dynReloc{}
	for _, r := range rels {
		offs[r.off] = r
	}
	for _, r := range rels {
		if r.typ != elf.R_X86_64_DTPMOD64 {
			continue
		}
		if anon {
			if r.sym != "" || m != dm {
				continue
			}
			if second, err := s.read64(m.bias + r.off + 8); err != nil || second != v {
				continue
			}
			if _, relocated := offs[r.off+8]; relocated {
				continue
			}
			return m.bias + r.off, true
		}
		if r.sym != name {
			continue
		}
		if q, ok := offs[r.off+8]; ok && q.typ == elf.R_X86_64_DTPOFF64 && q.sym == name {
			return m.bias + r.off, true
		}
	}
	return 0, false
}

func (s *session) read64(addr uint64) (uint64, error) {
	var b [8]byte
	if err := s.p.ReadMem(addr, b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}
