package process

import (
	"bytes"
	"fmt"
	"slices"

	"livesplice/internal/ptrace"
	"livesplice/internal/state"
)

// Undo takes an applied update out of a running process: all or nothing.
func Undo(pid int, id string, opt Options) error {
	s, err := attach(pid, opt)
	if err != nil {
		return err
	}
	defer s.detach()
	idx, a := s.rec.Find(id)
	if a == nil {
		return fmt.Errorf("undo %s: %w to process %d", id, ErrNotApplied, pid)
	}
	for _, later := range s.rec.Updates[idx+1:] {
		if slices.Contains(later.DependsOn, id) {
			return fmt.Errorf("undo %s: %w: %s (undo %s first)", id, ErrDependent, later.ID, later.ID)
		}
	}
	for _, f := range a.Funcs {
		cur := make([]byte, len(f.Jump))
		if err := s.p.ReadMem(f.Addr, cur); err != nil {
			return fmt.Errorf("undo %s: read %s: %w", id, f.Name, err)
		}
		if !bytes.Equal(cur, f.Jump) {
			return fmt.Errorf("undo %s: the trampoline of %s at %#x was changed by something else; nothing was changed", id, f.Name, f.Addr)
		}
	}
	var spans []span
	for _, g := range a.Regions {
		spans = append(spans, span{g.Addr, g.Addr + g.Text, "new code of " + id})
	}
	u := s.unwinder()
	if err := s.stopWorld(); err != nil {
		return fmt.Errorf("undo %s from process %d: %w; nothing was changed", id, pid, err)
	}
	if err := s.waitSafe(u, spans); err != nil {
		return fmt.Errorf("undo %s from process %d: %w; nothing was changed", id, pid, err)
	}
	old := &state.Record{Updates: slices.Clone(s.rec.Updates)}
	var restore, jumps []ptrace.Write
	for i := len(a.Funcs) - 1; i >= 0; i-- {
		f := a.Funcs[i]
		restore = append(restore, ptrace.Write{Addr: f.Addr, Data: f.Saved})
		jumps = append(jumps, ptrace.Write{Addr: f.Addr, Data: f.Jump})
	}
	regions := a.Regions
	s.rec.Updates = slices.Delete(s.rec.Updates, idx, idx+1)
	if err := s.commit(restore, jumps, old); err != nil {
		return fmt.Errorf("undo %s from process %d: %w; nothing was changed", id, pid, err)
	}
	// No thread is in the new code and nothing jumps there any more: the
	// process may run while the memory is given back.
	if err := s.p.ResumeExcept(s.worker); err != nil {
		opt.logf("undo %s: resume: %v", id, err)
	}
	for _, g := range regions {
		if err := s.munmap(g.Addr, g.Size); err != nil {
			opt.logf("undo %s: unmap %#x: %v", id, g.Addr, err)
		}
	}
	return nil
}
