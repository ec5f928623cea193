package process

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"livesplice/internal/amd64"
	"livesplice/internal/elfsym"
	"livesplice/internal/fault"
	"livesplice/internal/ptrace"
	"livesplice/internal/runpre"
	"livesplice/internal/state"
	"livesplice/internal/target"
	"livesplice/internal/update"
)

const page = 4096

func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

// plan is everything decided for one target before anything is written.
type plan struct {
	t       *update.Target
	mod     *module
	match   *runpre.Result
	region  state.Region
	chain   uint64        // room in the new code for ptrace.Syscalls
	protect []ptrace.Call // the region's final protections, not yet set
	images  [3][]byte     // text+stubs, rodata+GOT, data+bss
	offsets []uint64      // section offsets in the region
	partOff [3]uint64
	applied state.Applied
	deps    map[string]bool
	busy    []span       // more places that count as inside a replaced function
	hooks   []state.Hook // the update's hooks, resolved in the target
	// room in the read-only part for a GOT pair (module id, offset) per
	// thread-local variable new code reaches by general or local dynamic
	// access that run-pre matching did not learn (tls.go)
	tlsPairs map[int]uint64
}

// Apply applies an update to a running process: all or nothing.
func Apply(pid int, f *update.File, opt Options) error {
	return exited(pid, ptrace.Here(func() error { return apply(pid, f, opt) }))
}

func apply(pid int, f *update.File, opt Options) error {
	if err := target.CheckKind(Target(pid), f); err != nil {
		return err
	}
	t0 := time.Now()
	s, err := attach(pid, opt)
	if err != nil {
		return err
	}
	defer s.detach()
	opt.logf("attached to %d threads of process %d in %v", len(s.p.Threads()), pid, time.Since(t0))
	if _, a := s.rec.Find(f.ID); a != nil {
		return fmt.Errorf("update %s: %w to process %d", f.ID, ErrAlreadyApplied, pid)
	}
	for _, r := range f.Requires {
		if _, a := s.rec.Find(r); a == nil {
			return fmt.Errorf("update %s requires %s: %w to process %d; apply %s first", f.ID, r, ErrNotApplied, pid, r)
		}
	}
	fault.Point("apply:attached")
	var plans []*plan
	rollback := func() {
		for _, p := range plans {
			if p.region.Addr != 0 {
				s.munmap(p.region.Addr, p.region.Size)
			}
		}
	}
	var flag uint64 // the update's one commit flag, in the first target's region
	for i := range f.Targets {
		p, err := s.plan(&f.Targets[i], flag)
		if p != nil {
			plans = append(plans, p)
		}
		if err != nil {
			rollback()
			return fmt.Errorf("apply %s to process %d: %w; nothing was changed", f.ID, pid, err)
		}
		if flag == 0 {
			flag = p.applied.Flags[0]
		}
	}
	// The update's code is in place but unreachable: its PRE_APPLY hooks
	// may veto it now. From here on, an abandoned apply calls its
	// FAIL_APPLY hooks before that code goes.
	var hooks []state.Hook
	for _, p := range plans {
		hooks = append(hooks, p.hooks...)
	}
	abandon := func() { s.failHooks(hooks, update.HookFailApply) }
	// Every region's protections, and the state record if the process has
	// none yet, in one trip through the target. With hooks to run first,
	// the record waits until they agreed: a veto leaves no trace.
	var calls []ptrace.Call
	for _, p := range plans {
		calls = append(calls, p.protect...)
	}
	scratch := plans[0].region.Addr + plans[0].region.Size - 64
	if err := s.syscalls(plans[0].chain, calls, scratch, len(hooks) == 0); err != nil {
		rollback()
		return fmt.Errorf("apply %s to process %d: %w; nothing was changed", f.ID, pid, err)
	}
	if err := s.preHooks(hooks, update.HookPreApply); err != nil {
		abandon()
		rollback()
		return fmt.Errorf("apply %s to process %d: %w; nothing was changed", f.ID, pid, err)
	}
	var spans []span
	for _, p := range plans {
		for i, fn := range p.t.Functions {
			if fn.Status == update.StatusReplaced {
				m := p.match.Funcs[i]
				spans = append(spans, span{m.Addr, m.Addr + m.Size, fn.Name})
			}
		}
		spans = append(spans, p.busy...)
	}
	if err := s.syscalls(plans[0].chain, nil, scratch, true); err != nil {
		abandon()
		rollback()
		return fmt.Errorf("apply %s to process %d: %w; nothing was changed", f.ID, pid, err)
	}
	// Journal the new regions first: a livesplice killed from here on
	// leaves a record that the next command uses to clean up.
	a := state.Applied{ID: f.ID, Status: state.StatusPreparing, AppliedAt: time.Now().UTC().Format(time.RFC3339)}
	deps := map[string]bool{}
	for _, p := range plans {
		a.Targets = append(a.Targets, p.applied.Targets...)
		a.Regions = append(a.Regions, p.applied.Regions...)
		a.Flags = append(a.Flags, p.applied.Flags...)
		a.Funcs = append(a.Funcs, p.applied.Funcs...)
		a.Defs = append(a.Defs, p.applied.Defs...)
		a.Frames = append(a.Frames, p.applied.Frames...)
		a.Hooks = append(a.Hooks, p.applied.Hooks...)
		for d := range p.deps {
			deps[d] = true
		}
	}
	for d := range deps {
		a.DependsOn = append(a.DependsOn, d)
	}
	sort.Strings(a.DependsOn)
	old := &state.Record{Updates: slices.Clone(s.rec.Updates)}
	s.rec.Updates = append(s.rec.Updates, a)
	last := len(s.rec.Updates) - 1
	if err := s.writeState(); err != nil {
		abandon()
		s.rec = old
		rollback()
		return fmt.Errorf("apply %s to process %d: %w; nothing was changed", f.ID, pid, err)
	}
	fault.Point("apply:prepared")
	if err := s.registerFrames(last); err != nil {
		// In doubt whether libgcc holds the frames: drop the record but
		// leave the memory (frames.go).
		abandon()
		s.rec = old
		s.writeState()
		return fmt.Errorf("apply %s to process %d: give its call frame information to the program's unwinder: %w; nothing was changed (its memory stays mapped)", f.ID, pid, err)
	}
	fault.Point("apply:frames")
	u := s.unwinder()
	opt.logf("matched and placed the new code in %v", time.Since(t0))
	undoPrepared := func() {
		abandon()
		leak := s.dropFrames(last)
		s.rec = old
		s.writeState()
		if !leak {
			rollback()
		}
	}
	// Everything written in the stop is made now, before it.
	s.rec.Updates[last].Status = state.StatusCommitting
	committing, err := s.stateWrites()
	if err != nil {
		undoPrepared()
		return err
	}
	s.rec.Updates[last].Status = state.StatusApplied
	applied, err := s.stateWrites()
	if err != nil {
		undoPrepared()
		return err
	}
	var entries []ptrace.Write
	for _, fp := range a.Funcs {
		entries = append(entries, ptrace.Write{Addr: fp.At(), Data: fp.Jump})
	}
	s.precheck(u, spans)
	start := time.Now()
	if err := s.stopWorld(); err != nil {
		undoPrepared()
		return fmt.Errorf("apply %s to process %d: %w; nothing was changed", f.ID, pid, err)
	}
	fault.Point("apply:stopped")
	if err := s.waitSafe(u, spans); err != nil {
		undoPrepared()
		return fmt.Errorf("apply %s to process %d: %w; nothing was changed", f.ID, pid, err)
	}
	if err := s.callHooks(hooks, update.HookCheckApply); err != nil {
		undoPrepared()
		return fmt.Errorf("apply %s to process %d: %w; nothing was changed", f.ID, pid, err)
	}
	// Every thread is stopped and outside the old code. Redirect the
	// entries to the gates (no change in behaviour), then set the commit
	// flags: the moment the new code runs. Journal before and after.
	steps := []step{
		{"apply:committing", committing},
		{"apply:entry", entries},
		{"apply:flipped", flagWrites(a.Flags, 1)},
		{"apply:recorded", applied},
	}
	// Put everything back as it was: flags, entries, record, regions.
	putBack := func() {
		var back []ptrace.Write
		back = append(back, flagWrites(a.Flags, 0)...)
		for _, fp := range a.Funcs {
			back = append(back, ptrace.Write{Addr: fp.At(), Data: fp.Saved})
		}
		s.p.WriteMems(back)
		undoPrepared()
	}
	later := len(hooksOf(hooks, update.HookApply))+len(hooksOf(hooks, update.HookPostApply)) > 0
	if err := s.run(steps, !later); err != nil {
		putBack()
		return fmt.Errorf("apply %s to process %d: %w; nothing was changed", f.ID, pid, err)
	}
	if err := s.callHooks(hooks, update.HookApply); err != nil {
		putBack()
		return fmt.Errorf("apply %s to process %d: %w; the update was taken out again", f.ID, pid, err)
	}
	if err := s.postHooks(hooks, update.HookPostApply); err != nil {
		return fmt.Errorf("apply %s to process %d: the update is applied, but %w", f.ID, pid, err)
	}
	s.detach()
	opt.logf("applied %s to process %d (stopped for %v, total %v)", f.ID, pid, time.Since(start), time.Since(t0))
	return nil
}

// finder gives run-pre matching the running places of symbols.
type finder struct {
	s   *session
	mod *module
}

func (f finder) Candidates(y update.Symbol) ([]runpre.Candidate, error) {
	var syms []elfsym.Sym
	switch y.Kind {
	case update.SymLocal:
		syms = f.mod.table.Local(y.File, y.Name)
	case update.SymGlobal:
		for _, g := range f.mod.table.Global(y.Name) {
			if !g.Dyn || len(syms) == 0 {
				syms = append(syms, g)
			}
		}
		// A hidden function: global in its object, local in the file.
		syms = append(syms, f.mod.table.BoundHere(y.Name, y.File)...)
	}
	file := ""
	if y.Kind == update.SymLocal {
		file = y.File
	}
	for _, d := range f.s.rec.DefinedIn(f.mod.path, file, y.Name) {
		if d.Func {
			syms = append(syms, elfsym.Sym{Name: d.Name, Value: d.Addr - f.mod.bias, Size: d.Size, Type: elf.STT_FUNC})
		}
	}
	var out []runpre.Candidate
	for _, g := range syms {
		if g.Type == elf.STT_FUNC || g.Type == elf.STT_NOTYPE {
			c := runpre.Candidate{Addr: f.mod.bias + g.Value, Size: g.Size}
			if !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
	}
	return out, nil
}

// BoundLocally tells run-pre matching which global symbols of the update
// the target object binds to itself (hidden ones the linker made local):
// their addresses, read from the running code, are learned and checked
// like a static's, and the new code's references use them.
func (f finder) BoundLocally(y update.Symbol) bool {
	return y.Kind == update.SymGlobal && len(f.mod.table.Demoted(y.Name)) > 0
}

func (f finder) Follow(addr uint64) (uint64, uint64, bool) {
	if t := f.s.rec.Trampoline(addr); t != nil {
		return t.New, t.NewSize, true
	}
	return 0, 0, false
}

// plan matches, places and relocates one target's code in the target
// process; the only change it makes is the new (not yet reachable) region.
// The gates test the update's commit flag: the one at flag, or, for the
// first target (flag 0), a new one in this region, so that one byte
// switches every object of the update at once.
func (s *session) plan(t *update.Target, flag uint64) (*plan, error) {
	mod, err := findTarget(s.pid, s.mods, t, s.opt.ids)
	if err != nil {
		return nil, err
	}
	mod.useSymtab(s.pid, t.Symtab)
	match, err := runpre.Match(t, s.p, finder{s, mod})
	if err != nil {
		return nil, err
	}
	p := &plan{t: t, mod: mod, match: match, deps: map[string]bool{}}

	// Layout: code and import stubs, then read-only data and GOT slots,
	// then writable data: three page-aligned parts, never writable and
	// executable at once.
	p.offsets = make([]uint64, len(t.Sections))
	var size [3]uint64
	size[1] = 8 // the commit flag byte, first in the read-only part
	part := func(k string) int {
		switch k {
		case update.KindText:
			return 0
		case update.KindRodata:
			return 1
		}
		return 2
	}
	for i, sec := range t.Sections {
		k := part(sec.Kind)
		size[k] = alignUp(size[k], sec.Align)
		p.offsets[i] = size[k]
		size[k] += sec.Size
	}
	stubs, gots := map[int]uint64{}, map[int]uint64{}
	// A PC32 data reference of new code may find its variable beyond 2 GiB
	// (a library's, which the program has no copy relocation for): it then
	// goes through a GOT slot and, for a load, a thunk (amd64.ViaGOT).
	// Room for both is set aside for every such reference.
	type site struct{ sec, reloc int }
	thunks := map[site]uint64{}
	var thunkSites []site
	for si, sec := range t.Sections {
		for ri, r := range sec.Relocs {
			if update.RelocIsGOT(r.Type) {
				if _, ok := gots[r.Symbol]; !ok {
					gots[r.Symbol] = 0
				}
			} else if sec.Kind == update.KindText && (elf.R_X86_64(r.Type) == elf.R_X86_64_PLT32 || elf.R_X86_64(r.Type) == elf.R_X86_64_PC32) && t.Symbols[r.Symbol].Kind != update.SymSection {
				if _, ok := stubs[r.Symbol]; !ok {
					stubs[r.Symbol] = 0
				}
				if elf.R_X86_64(r.Type) == elf.R_X86_64_PC32 && t.Symbols[r.Symbol].Type != "func" {
					gots[r.Symbol] = 0
					thunkSites = append(thunkSites, site{si, ri})
				}
			}
		}
	}
	size[0] = alignUp(size[0], 16)
	for _, k := range sortedKeys(stubs) {
		stubs[k] = size[0]
		size[0] += amd64.StubSize
	}
	for _, k := range thunkSites {
		thunks[k] = size[0]
		size[0] += amd64.ThunkSize
	}
	gateOff := size[0]
	for _, fn := range t.Functions {
		if fn.Status == update.StatusReplaced {
			size[0] += amd64.GateStubSize
		}
	}
	// A function whose code branches back into the bytes its entry jump
	// covers (a loop whose head is the entry) gets a verbatim copy of its
	// old code for its gate's old path: the old code itself would run
	// into the middle of the jump.
	copies := map[int]uint64{} // function index -> offset of the copy
	for i, fn := range t.Functions {
		if fn.Status != update.StatusReplaced {
			continue
		}
		m := match.Funcs[i]
		code := make([]byte, m.Size)
		if err := s.p.ReadMem(m.Addr, code); err != nil {
			return nil, fmt.Errorf("read %s: %w", fn.Name, err)
		}
		if off, into := amd64.BranchesInto(code, m.Addr, 0, min(len(code), amd64.NearJumpSize)); into {
			if m.Size > 1<<20 {
				return nil, fmt.Errorf("%s: %w: the instruction at +%#x branches into its first bytes, and it is too large to copy for its gate", fn.Name, amd64.ErrNotSpliceable, off)
			}
			size[0] = alignUp(size[0], 16)
			copies[i] = size[0]
			size[0] += m.Size
		}
	}
	textSize := size[0]
	// Room for the code that runs this apply's system calls in one go.
	chainOff := alignUp(size[0], 16)
	size[0] = chainOff + ptrace.ChainCodeSize
	size[1] = alignUp(size[1], 8)
	for _, k := range sortedKeys(gots) {
		gots[k] = size[1]
		size[1] += 8
	}
	p.tlsPairs = map[int]uint64{}
	for si, y := range t.Symbols {
		if _, ok := match.Learned[si]; !ok && (y.Type == "tls-tlsgd" || y.Type == "tls-tlsld") {
			p.tlsPairs[si] = 0
		}
	}
	size[1] = alignUp(size[1], 16)
	for _, k := range sortedKeys(p.tlsPairs) {
		p.tlsPairs[k] = size[1]
		size[1] += 16
	}
	size[2] += 64 // scratch for remote strings
	p.partOff[0] = 0
	p.partOff[1] = alignUp(size[0], page)
	p.partOff[2] = p.partOff[1] + alignUp(size[1], page)
	total := p.partOff[2] + alignUp(size[2], page)
	for k := range p.images {
		p.images[k] = make([]byte, size[k])
	}

	addr, err := s.mapNear(mod, total)
	if err != nil {
		return nil, err
	}
	p.region = state.Region{Addr: addr, Size: total, Text: textSize}
	p.chain = addr + chainOff

	// Resolve every symbol the new code refers to.
	secAddr := func(i int) uint64 { return addr + p.partOff[part(t.Sections[i].Kind)] + p.offsets[i] }
	resolved := map[int]uint64{}
	resolve := func(si int) (uint64, error) {
		if v, ok := resolved[si]; ok {
			return v, nil
		}
		v, err := s.resolve(p, si, secAddr)
		if err != nil {
			return 0, err
		}
		resolved[si] = v
		if o := s.rec.Owner(v); o != nil {
			p.deps[o.ID] = true
		}
		return v, nil
	}
	for i, sec := range t.Sections {
		k := part(sec.Kind)
		img := p.images[k][p.offsets[i] : p.offsets[i]+sec.Size]
		copy(img, sec.Data)
		for ri, r := range sec.Relocs {
			sv, err := resolve(r.Symbol)
			if err != nil {
				return p, err
			}
			place := secAddr(i) + r.Offset
			var got uint64
			if update.RelocIsGOT(r.Type) {
				got = addr + p.partOff[1] + gots[r.Symbol]
				binary.LittleEndian.PutUint64(p.images[1][gots[r.Symbol]:], sv)
			} else if so, ok := stubs[r.Symbol]; ok && sec.Kind == update.KindText && !amd64.FitsRel32(place+4, uint64(int64(sv)+r.Addend+4)) {
				if to, ok := thunks[site{i, ri}]; ok {
					got = addr + p.partOff[1] + gots[r.Symbol]
					binary.LittleEndian.PutUint64(p.images[1][gots[r.Symbol]:], sv)
					thunk, err := amd64.ViaGOT(img, secAddr(i), int(r.Offset), r.Addend, got, addr+to)
					if err != nil {
						return p, fmt.Errorf("%s: new code refers directly to %s, which lies beyond 2 GiB of the new code (no copy relocation for it in %s), and cannot go through a GOT slot: %w", sec.Name, t.Symbols[r.Symbol].Name, mod.path, err)
					}
					copy(p.images[0][to:], thunk)
					continue
				}
				copy(p.images[0][so:], amd64.FarJump(sv))
				sv = addr + so
			}
			if err := amd64.Write(img, r.Offset, r.Type, place, sv, r.Addend, got); err != nil {
				return p, fmt.Errorf("%s: %w", sec.Name, err)
			}
		}
	}
	// Entries: each replaced function's first bytes will jump to a gate
	// stub that runs the new code once the update's flag is set, and the
	// old code (its displaced first instructions, then the rest) until
	// then. Decided now, written once every thread is out of the way.
	slot := addr + p.partOff[1] // the flag, or a pointer to it
	p.applied = state.Applied{Targets: []string{mod.path}, Regions: []state.Region{p.region}}
	gateStub := amd64.GateStub
	switch {
	case flag == 0:
		flag = slot
		p.applied.Flags = []uint64{flag}
	case !amd64.FitsRel32(addr, flag) || !amd64.FitsRel32(slot, flag):
		binary.LittleEndian.PutUint64(p.images[1], flag)
		flag = slot
		gateStub = amd64.IndirectGateStub
	}
	for i, sec := range t.Sections {
		for _, d := range sec.Defs {
			p.applied.Defs = append(p.applied.Defs, state.Def{Name: d.Name, File: d.File, Addr: secAddr(i) + d.Offset, Size: d.Size, Func: d.Func})
		}
		if sec.Name == update.EHFrameName && sec.Kind == update.KindRodata {
			p.applied.Frames = append(p.applied.Frames, state.Region{Addr: secAddr(i), Size: sec.Size})
		}
	}
	for _, h := range t.Hooks {
		v, err := resolve(h.Symbol)
		if err != nil {
			return p, fmt.Errorf("%s hook %s: %w", h.Kind, h.Name, err)
		}
		sh := state.Hook{Kind: h.Kind, Name: h.Name, Addr: v}
		p.hooks = append(p.hooks, sh)
		switch h.Kind {
		case update.HookPreUndo, update.HookCheckUndo, update.HookUndo, update.HookPostUndo, update.HookFailUndo:
			p.applied.Hooks = append(p.applied.Hooks, sh)
		}
	}
	gate := gateOff
	placed := map[uint64]int{} // running entry -> index in p.applied.Funcs
	for i, fn := range t.Functions {
		if fn.Status != update.StatusReplaced {
			continue
		}
		m := match.Funcs[i]
		to := secAddr(fn.Section)
		if j, ok := placed[m.Addr]; ok {
			// Aliases (C++ C1/C2 and D1/D2 constructors and destructors,
			// __attribute__((alias))) are one running function: one
			// entry jump, else the second would save the first as the
			// "original" bytes.
			if q := p.applied.Funcs[j]; q.New != to {
				return p, fmt.Errorf("%s and %s are one function at %#x in %s, but the update gives them different new code (replace them together, or not at all)", q.Name, fn.Name, m.Addr, mod.path)
			}
			continue
		}
		stubAddr := addr + gate
		e, err := s.entry(mod, fn, m, stubAddr)
		if err != nil {
			return p, err
		}
		// A function an earlier update placed may jump out to its ViaGOT
		// thunks and back: a thread in one is inside the function.
		for _, to := range amd64.JumpsOut(e.code, m.Addr) {
			if s.rec.Owner(to) != nil {
				p.busy = append(p.busy, span{to, to + amd64.ThunkSize, fn.Name})
			}
		}
		// A branch back into the first bytes (a loop whose head is the
		// entry) is no obstacle: the safety check proves that no thread
		// is inside the function when the jump is written; from then on
		// the old code runs only through the gate while the flag is clear
		// (within the one stop, or after a livesplice was killed between
		// writing the entries and the flag), and then as a copy.
		orig, displaced := m.Addr, e.displaced
		if off, ok := copies[i]; ok {
			cp, err := amd64.CopyFunction(e.code[:m.Size], m.Addr, addr+off)
			if err != nil {
				return p, fmt.Errorf("%s: it branches back into its first bytes, and its old code cannot be copied for its gate: %w", fn.Name, err)
			}
			copy(p.images[0][off:], cp)
			orig, displaced = addr+off, nil
		}
		stub, err := gateStub(stubAddr, flag, to, orig, displaced)
		if err != nil {
			return p, fmt.Errorf("%s: %w", fn.Name, err)
		}
		for _, q := range p.applied.Funcs {
			if q.Overlaps(e.at, e.at+uint64(len(e.jump))) {
				return p, fmt.Errorf("%s: %w: its entry jump would overlap that of %s", fn.Name, amd64.ErrNotSpliceable, q.Name)
			}
		}
		if q := s.rec.Overlapping(e.at, e.at+uint64(len(e.jump))); q != nil && q.Addr != m.Addr {
			return p, fmt.Errorf("%s: %w: its entry jump would overlap that of %s, which an applied update redirected", fn.Name, amd64.ErrNotSpliceable, q.Name)
		}
		copy(p.images[0][gate:], stub)
		gate += amd64.GateStubSize
		if o := s.rec.Owner(m.Addr); o != nil {
			p.deps[o.ID] = true
		}
		_, copied := copies[i]
		s.opt.logf("%s: %s", fn.Name, entryKind(e, m, copied))
		placed[m.Addr] = len(p.applied.Funcs)
		p.applied.Funcs = append(p.applied.Funcs, state.Patched{Name: fn.Name, File: fn.File, Addr: m.Addr, Size: m.Size,
			Stub: stubAddr, New: to, NewSize: fn.Size, Saved: e.saved, Jump: e.jump, Lead: m.Addr - e.at})
	}
	for k, img := range p.images {
		if len(img) > 0 {
			if err := s.p.WriteMem(addr+p.partOff[k], img); err != nil {
				return p, fmt.Errorf("write new code: %w", err)
			}
		}
	}
	// The region was mapped read and execute (so that the chain's code
	// runs); read-only data and data get their own protections, with the
	// other plans' and the state record's system calls (apply).
	if p.partOff[2] > p.partOff[1] {
		p.protect = append(p.protect, ptrace.Call{Nr: unix.SYS_MPROTECT, Args: [6]uint64{addr + p.partOff[1], p.partOff[2] - p.partOff[1], unix.PROT_READ}})
	}
	p.protect = append(p.protect, ptrace.Call{Nr: unix.SYS_MPROTECT, Args: [6]uint64{addr + p.partOff[2], total - p.partOff[2], unix.PROT_READ | unix.PROT_WRITE}})

	return p, nil
}

// entryKind names, for apply -v, the way entry chose to redirect a
// function (and whether its gate runs a copy of its old code).
func entryKind(e entryRedirect, m runpre.Func, copied bool) string {
	var k string
	switch {
	case e.at < m.Addr:
		k = fmt.Sprintf("entry jump through the padding before it (lead %d)", m.Addr-e.at)
	case m.Size < uint64(len(e.jump)):
		k = "entry jump over the padding after it"
	default:
		k = "entry jump over its first instructions"
	}
	if copied {
		k += ", gate runs a copy of its old code"
	}
	return k
}

// entryRedirect is how one function's entry is redirected to its gate.
type entryRedirect struct {
	at        uint64 // where jump is written: the entry, or padding before it
	jump      []byte
	saved     []byte // the bytes jump replaces
	displaced []byte // the function's first whole instructions the jump covers
	code      []byte // the function's running code
}

// entry decides how a replaced function's entry jumps to its gate at stub:
// a jump over its first instructions; for a function shorter than that
// jump, one that also covers the alignment padding after it
// (amd64.ShortEntry) or, failing that, a 2-byte jump into a 5-byte one in
// the padding before it (amd64.PaddedEntry).
func (s *session) entry(mod *module, fn update.Function, m runpre.Func, stub uint64) (entryRedirect, error) {
	jump := amd64.Jump(m.Addr, stub)
	if m.Size >= uint64(len(jump)) {
		code := make([]byte, m.Size)
		if err := s.p.ReadMem(m.Addr, code); err != nil {
			return entryRedirect{}, fmt.Errorf("read %s: %w", fn.Name, err)
		}
		n, err := amd64.Displaced(code, len(jump))
		if err != nil {
			return entryRedirect{}, fmt.Errorf("%s (%d bytes): %w", fn.Name, m.Size, err)
		}
		return entryRedirect{at: m.Addr, jump: jump, saved: slices.Clone(code[:len(jump)]), displaced: code[:n], code: code}, nil
	}
	// A function shorter than the jump (mov %edi,%eax; ret): the jump may
	// also cover the alignment padding after it, up to the next symbol, if
	// nothing can run there.
	size := max(m.Size, min(mod.table.Room(m.Addr-mod.bias), 64))
	code := make([]byte, size)
	if err := s.p.ReadMem(m.Addr, code); err != nil {
		return entryRedirect{}, fmt.Errorf("read %s: %w", fn.Name, err)
	}
	n, errAfter := amd64.ShortEntry(code, int(m.Size), len(jump))
	if errAfter == nil {
		errAfter = s.noDynRelocs(mod, m.Addr, m.Addr+uint64(len(jump)))
	}
	if errAfter == nil {
		return entryRedirect{at: m.Addr, jump: jump, saved: slices.Clone(code[:len(jump)]), displaced: code[:n], code: code[:m.Size]}, nil
	}
	e, errBefore := s.paddedEntry(mod, m, stub, code[:m.Size])
	if errBefore == nil {
		return e, nil
	}
	return entryRedirect{}, fmt.Errorf("%s (%d bytes): %w; nor through padding before it: %v (change its callers instead, or build with -fpatchable-function-entry=5)", fn.Name, m.Size, errAfter, strings.TrimPrefix(errBefore.Error(), amd64.ErrNotSpliceable.Error()+": "))
}

// paddedEntry is entry through padding before a short function: a 2-byte
// jmp rel8 at its entry to a 5-byte jump in the nearest alignment padding
// before it, within the rel8's reach, that amd64.Padding proves unused
// and the loader did not relocate.
func (s *session) paddedEntry(mod *module, m runpre.Func, stub uint64, code []byte) (entryRedirect, error) {
	n, err := amd64.Displaced(code, 2)
	if err != nil {
		return entryRedirect{}, err
	}
	var first error
	for cur := m.Addr - mod.bias; m.Addr+2-(mod.bias+cur) < amd64.ShortJumpReach+amd64.NearJumpSize; {
		start, end, ok := mod.table.Before(cur)
		if !ok {
			if first == nil {
				first = fmt.Errorf("%w: no symbol table shows what precedes it", amd64.ErrNotSpliceable)
			}
			break
		}
		before := make([]byte, cur-start)
		if len(before) > 1<<20 {
			break
		}
		if err := s.p.ReadMem(mod.bias+start, before); err != nil {
			return entryRedirect{}, fmt.Errorf("read the code before it: %w", err)
		}
		pad, err := amd64.Padding(before, mod.bias+start, int(end-start))
		if err == nil && pad < amd64.HotPatchLead {
			err = fmt.Errorf("%d bytes of padding at %#x", pad, mod.bias+cur-uint64(pad))
		}
		at := mod.bias + cur - amd64.HotPatchLead
		if err == nil {
			err = s.noDynRelocs(mod, at, at+amd64.HotPatchLead)
		}
		if err == nil {
			err = s.noDynRelocs(mod, m.Addr, m.Addr+2)
		}
		if err == nil {
			orig := make([]byte, m.Addr+2-at)
			if err := s.p.ReadMem(at, orig); err != nil {
				return entryRedirect{}, fmt.Errorf("read the code before it: %w", err)
			}
			// The code between the padding and the function (other
			// functions, when the padding is further back) and the
			// function itself must not branch into the jump either.
			if from, ok := amd64.BranchTo(append(orig[amd64.HotPatchLead:len(orig)-2:len(orig)-2], code...), at+amd64.HotPatchLead, at, at+amd64.HotPatchLead); ok {
				err = fmt.Errorf("the instruction at %#x branches into the padding at %#x", from, at)
			} else {
				var jump []byte
				jump, err = amd64.PaddedEntry(orig, at, m.Addr, stub)
				if err == nil {
					return entryRedirect{at: at, jump: jump, saved: orig, displaced: code[:n], code: code}, nil
				}
			}
		}
		if first == nil {
			first = err
		}
		cur = start
	}
	return entryRedirect{}, fmt.Errorf("none within reach of a 2-byte jump is free: %v", first)
}

func sortedKeys(m map[int]uint64) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	return keys
}

// mapNear maps size bytes (read and execute for now) within reach of a rel32 from
// the module's code, preferring the closest free gap below it.
func (s *session) mapNear(mod *module, size uint64) (uint64, error) {
	lo, hi := mod.start(), mod.end()
	const reach = 1<<31 - 1<<24
	type gap struct{ a, b uint64 }
	var gaps []gap
	prev := uint64(0x10000)
	for _, m := range s.maps {
		if m.Start > prev {
			gaps = append(gaps, gap{prev, m.Start})
		}
		prev = max(prev, m.End)
	}
	var cands []uint64
	for _, g := range gaps {
		if g.b-g.a < size+2*page {
			continue
		}
		// highest place in the gap below the module, lowest above it,
		// keeping a guard page from neighbours (and heap growth room).
		if g.b <= lo {
			a := g.b - size - page
			if hi-a <= reach {
				cands = append(cands, a)
			}
		} else if g.a >= hi {
			a := g.a + 64*1024*1024
			if a+size+page > g.b {
				a = g.a + page
			}
			if a+size-lo <= reach {
				cands = append(cands, a)
			}
		}
	}
	sort.Slice(cands, func(i, j int) bool { return dist(cands[i], lo) < dist(cands[j], lo) })
	var lastErr error
	for _, a := range cands {
		a &^= page - 1
		got, err := s.syscall(unix.SYS_MMAP, a, size, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0)
		if err == nil && got == a {
			return a, nil
		}
		if err == nil {
			s.munmap(got, size)
		}
		// Only mmap's own refusal of this address (taken, or no memory
		// for it) means trying the next one; anything else (the process
		// exited, ptrace failed) ends the search with its own error, not
		// a misleading "no room".
		if e := syscallErrno(err); err != nil && e != unix.EEXIST && e != unix.ENOMEM {
			return 0, fmt.Errorf("map new code near %s: %w", mod.path, err)
		}
		lastErr = err
	}
	if lastErr == nil {
		lastErr = errors.New("no free address range")
	}
	return 0, fmt.Errorf("no room for %d bytes of new code within 2 GiB of %s: %v", size, mod.path, lastErr)
}

func dist(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}

// resolve finds the address of symbol si for the new code: the update's own
// sections, what run-pre matching learned, the target object's symbols,
// then every loaded object's exports in load order.
func (s *session) resolve(p *plan, si int, secAddr func(int) uint64) (uint64, error) {
	y := p.t.Symbols[si]
	if y.IsTLS() {
		// Where a thread-local variable lives (its thread-pointer
		// offset, the object's GOT pair) is only known from the running
		// code that reaches it the same way.
		if v, ok := p.match.Learned[si]; ok {
			return v, nil
		}
		v, err := s.tlsValue(p, si)
		if err != nil {
			return 0, fmt.Errorf("thread-local variable %s: new code reaches it as %s, which no replaced function's running code does: %w", y.Name, strings.TrimPrefix(y.Type, "tls-"), err)
		}
		return v, nil
	}
	switch y.Kind {
	case update.SymSection:
		return secAddr(y.Section) + y.Offset, nil
	case update.SymAnon:
		return 0, fmt.Errorf("new code refers to pre-only data %s", y.Name)
	case update.SymLocal:
		if v, ok := p.match.Learned[si]; ok {
			return v, nil
		}
		c := p.mod.table.Local(y.File, y.Name)
		if len(c) == 0 {
			if d := s.rec.DefinedIn(p.mod.path, y.File, y.Name); len(d) > 0 {
				return d[len(d)-1].Addr, nil // the newest update's definition
			}
		}
		switch len(c) {
		case 1:
			return p.mod.bias + c[0].Value, nil
		case 0:
			return 0, fmt.Errorf("static symbol %s of %s not found in %s", y.Name, y.File, p.mod.path)
		}
		return 0, fmt.Errorf("static symbol %s of %s is ambiguous in %s (%d places) and no replaced function uses it", y.Name, y.File, p.mod.path, len(c))
	}
	// global: what run-pre matching read for a global the target object
	// binds to itself, the target object's definitions, then the global
	// scope.
	if v, ok := p.match.Learned[si]; ok {
		return v, nil
	}
	// Hidden in the target object (the linker made it local there): the
	// static linker bound every reference inside the object to it.
	if here := p.mod.table.Demoted(y.Name); len(here) > 0 {
		return p.mod.hiddenAddr(y.Name, here)
	}
	mods := append([]*module{p.mod}, s.mods...)
	for _, m := range mods {
		if m.load(s.pid) != nil {
			continue
		}
		for _, g := range m.table.Global(y.Name) {
			if g.Value == 0 || g.Type == elf.STT_TLS {
				continue
			}
			addr := m.bias + g.Value
			if g.Type == elf.STT_GNU_IFUNC {
				v, err := s.p.Call(addr, 2*time.Second)
				if err != nil {
					return 0, fmt.Errorf("resolve indirect function %s: %w", y.Name, err)
				}
				return v, nil
			}
			return addr, nil
		}
	}
	// A local of that name the linker may have made of it outside its
	// own scope, when no loaded object defines the name.
	if here := p.mod.table.BoundHere(y.Name, y.File); len(here) > 0 {
		return p.mod.hiddenAddr(y.Name, here)
	}
	if d := s.rec.Defined("", y.Name); len(d) > 0 {
		return d[len(d)-1].Addr, nil
	}
	if strings.HasPrefix(y.Name, "livesplice_shadow_") {
		// create carries no runtime of its own in an update built on a
		// tree that calls it already (docs/custom-code.md).
		return 0, fmt.Errorf("%s not found: the update uses the shadow variable runtime of the earlier update it was built on, which is not applied to this process (apply that one first)", y.Name)
	}
	return 0, fmt.Errorf("symbol %s not found in %s or any loaded library (the new code needs a library the process has not loaded)", y.Name, p.mod.path)
}

// hiddenAddr is where a global symbol that the linker made local to the
// module runs, if that is one place.
func (m *module) hiddenAddr(name string, here []elfsym.Sym) (uint64, error) {
	if len(here) > 1 {
		return 0, fmt.Errorf("symbol %s is local to %s in %d places and no replaced function uses it", name, m.path, len(here))
	}
	return m.bias + here[0].Value, nil
}
