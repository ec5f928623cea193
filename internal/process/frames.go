package process

import (
	"debug/elf"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"livesplice/internal/fault"
)

// The program's own unwinder (libgcc's: C++ exceptions, backtrace(),
// pthread_cancel) finds call frame information through the loaded objects'
// PT_GNU_EH_FRAME, which knows nothing of an update's code. An update's
// .eh_frame copies are handed to it with __register_frame when the process
// has libgcc_s loaded, and taken back with __deregister_frame before the
// memory goes.
//
// Neither call can be made safe against a livesplice killed during it:
// libgcc aborts the program on deregistering what it does not hold, and
// reads freed memory later if a registration outlives its memory. So the
// record journals each step ("registering", "registered", "deregistering")
// and whatever is in doubt is resolved by never unmapping that update's
// memory: a few pages leaked, never a crash (docs/reliability.md).

// Unwinder states of state.Applied.Unwinder.
const (
	framesRegistering   = "registering"
	framesRegistered    = "registered"
	framesDeregistering = "deregistering"
)

// frameCallTimeout bounds each call into libgcc (it takes a mutex that a
// running thread may hold for a moment).
const frameCallTimeout = 2 * time.Second

// libgccFunc finds a function that libgcc_s exports, if the process has
// libgcc_s loaded; other objects' symbol tables are never read for it, so
// the many programs without it pay nothing.
func (s *session) libgccFunc(name string) (uint64, bool) {
	for _, m := range s.mods {
		if !strings.HasPrefix(filepath.Base(m.path), "libgcc_s.so") || m.load(s.pid) != nil {
			continue
		}
		for _, g := range m.table.Global(name) {
			if g.Value != 0 && g.Type == elf.STT_FUNC {
				return m.bias + g.Value, true
			}
		}
	}
	return 0, false
}

// registerFrames hands update idx's call frame information to the
// program's unwinder, journaled. An error means the state is in doubt:
// the caller must leave the update's memory mapped.
func (s *session) registerFrames(idx int) error {
	a := &s.rec.Updates[idx]
	if len(a.Frames) == 0 {
		return nil
	}
	reg, ok := s.libgccFunc("__register_frame")
	if _, ok2 := s.libgccFunc("__deregister_frame"); !ok || !ok2 {
		return nil // no libgcc_s: nothing in the process unwinds that way
	}
	a.Unwinder = framesRegistering
	if err := s.writeState(); err != nil {
		a.Unwinder = ""
		return fmt.Errorf("journal: %w", err)
	}
	fault.Point("frames:registering")
	for _, fr := range a.Frames {
		if _, err := s.p.Call(reg, frameCallTimeout, fr.Addr); err != nil {
			return fmt.Errorf("__register_frame(%#x): %w", fr.Addr, err)
		}
	}
	a.Unwinder = framesRegistered
	if err := s.writeState(); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}

// dropFrames takes update idx's call frame information back from the
// program's unwinder, journaled, and reports whether the update's memory
// must stay mapped (the registration is in doubt: see above).
func (s *session) dropFrames(idx int) (leak bool) {
	a := &s.rec.Updates[idx]
	switch a.Unwinder {
	case "":
		return false
	case framesRegistered:
	default:
		s.opt.logf("%s: its call frame information may be registered with the program's unwinder; its memory stays mapped", a.ID)
		return true
	}
	dereg, ok := s.libgccFunc("__deregister_frame")
	if !ok {
		return true
	}
	a.Unwinder = framesDeregistering
	if s.writeState() != nil {
		return true
	}
	fault.Point("frames:deregistering")
	for i := len(a.Frames) - 1; i >= 0; i-- {
		if _, err := s.p.Call(dereg, frameCallTimeout, a.Frames[i].Addr); err != nil {
			s.opt.logf("%s: __deregister_frame(%#x): %v; its memory stays mapped", a.ID, a.Frames[i].Addr, err)
			return true
		}
	}
	a.Unwinder = ""
	return s.writeState() != nil
}
