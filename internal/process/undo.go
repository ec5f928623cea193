package process

import (
	"bytes"
	"fmt"
	"slices"

	"livesplice/internal/amd64"
	"livesplice/internal/fault"
	"livesplice/internal/ptrace"
	"livesplice/internal/state"
	"livesplice/internal/update"
)

// Undo takes an applied update out of a running process: all or nothing.
func Undo(pid int, id string, opt Options) error {
	return exited(pid, ptrace.Here(func() error { return undo(pid, id, opt) }))
}

func undo(pid int, id string, opt Options) error {
	s, err := attach(pid, opt)
	if err != nil {
		return err
	}
	defer s.detach()
	fault.Point("undo:attached")
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
		if err := s.p.ReadMem(f.At(), cur); err != nil {
			return fmt.Errorf("undo %s: read %s: %w", id, f.Name, err)
		}
		if !bytes.Equal(cur, f.Jump) {
			return fmt.Errorf("undo %s: the entry of %s at %#x was changed by something else; nothing was changed", id, f.Name, f.Addr)
		}
	}
	return s.remove(idx, "undo")
}

// remove takes update idx of the record out, whatever its status: the
// undo of an applied update, or the clean-up of an interrupted apply or
// undo. With every thread stopped and none in the update's code or gates,
// it clears the commit flags (the moment the old code runs again),
// restores the entries, then gives the memory back and drops the record.
// An undo calls the update's undo hooks; a clean-up calls none (the
// update's custom code may never have run).
func (s *session) remove(idx int, op string) error {
	a := s.rec.Updates[idx]
	var hooks []state.Hook
	if op == "undo" {
		hooks = a.Hooks
	}
	if err := s.preHooks(hooks, update.HookPreUndo); err != nil {
		s.failHooks(hooks, update.HookFailUndo)
		return fmt.Errorf("%s %s from process %d: %w; nothing was changed", op, a.ID, s.pid, err)
	}
	var spans []span
	for _, g := range a.Regions {
		spans = append(spans, span{g.Addr, g.Addr + g.Text, "new code of " + a.ID})
	}
	for _, f := range a.Funcs {
		if f.Lead > 0 {
			// The jump in the padding before a short function: a thread
			// there would run the restored filler.
			spans = append(spans, span{f.At(), f.At() + amd64.NearJumpSize, f.Name})
		}
	}
	// Everything written in the stop is made now, before it: the record,
	// the flags and the entries that still hold our jump (an interrupted
	// apply may not have written them all; nothing else writes them while
	// we hold the process's lock).
	prev := a.Status
	s.rec.Updates[idx].Status = state.StatusUndoing
	undoing, err := s.stateWrites()
	s.rec.Updates[idx].Status = prev
	if err != nil {
		return err
	}
	var restore []ptrace.Write
	for i := len(a.Funcs) - 1; i >= 0; i-- {
		f := a.Funcs[i]
		cur := make([]byte, len(f.Jump))
		if s.p.ReadMem(f.At(), cur) == nil && bytes.Equal(cur, f.Jump) {
			restore = append(restore, ptrace.Write{Addr: f.At(), Data: f.Saved})
		}
	}
	clear, set := s.mappedFlags(a, 0), s.mappedFlags(a, 1)
	u := s.unwinder()
	s.precheck(u, spans)
	if err := s.stopWorld(); err != nil {
		s.failHooks(hooks, update.HookFailUndo)
		return fmt.Errorf("%s %s from process %d: %w; nothing was changed", op, a.ID, s.pid, err)
	}
	fault.Point(op + ":stopped")
	if err := s.waitSafe(u, spans); err != nil {
		s.failHooks(hooks, update.HookFailUndo)
		return fmt.Errorf("%s %s from process %d: %w; nothing was changed", op, a.ID, s.pid, err)
	}
	if err := s.callHooks(hooks, update.HookCheckUndo); err != nil {
		s.failHooks(hooks, update.HookFailUndo)
		return fmt.Errorf("%s %s from process %d: %w; nothing was changed", op, a.ID, s.pid, err)
	}
	s.rec.Updates[idx].Status = state.StatusUndoing
	steps := []step{
		{op + ":undoing", undoing},
		{op + ":flipped", clear},
		{op + ":entry", restore},
	}
	err = s.run(steps, false)
	if err == nil {
		// Stopped, the old code in charge again: the UNDO hooks.
		if err = s.callHooks(hooks, update.HookUndo); err != nil {
			s.opt.logf("%s %s: %v; putting the update back", op, a.ID, err)
		}
	}
	if err != nil {
		// Back to applied: entries to the gates, flags as they were.
		var back []ptrace.Write
		for _, f := range a.Funcs {
			back = append(back, ptrace.Write{Addr: f.At(), Data: f.Jump})
		}
		if prev == state.StatusApplied {
			back = append(back, set...)
		}
		s.p.WriteMems(back)
		s.rec.Updates[idx].Status = prev
		s.writeState()
		s.failHooks(hooks, update.HookFailUndo)
		return fmt.Errorf("%s %s from process %d: %w; nothing was changed", op, a.ID, s.pid, err)
	}
	// Nothing runs or enters the update's memory any more: let the process
	// go on while the memory is given back, then drop the record.
	if err := s.p.ResumeExcept(s.worker); err != nil {
		s.opt.logf("%s %s: resume: %v", op, a.ID, err)
	}
	// The process runs the old code; the update's memory is still there
	// for its POST_UNDO hooks (freeing shadow variables, say).
	postErr := s.postHooks(hooks, update.HookPostUndo)
	if err := s.refresh(); err != nil {
		return err
	}
	leak := s.dropFrames(idx)
	for _, g := range a.Regions {
		if s.ours(g) && !leak {
			if err := s.munmap(g.Addr, g.Size); err != nil {
				s.opt.logf("%s %s: unmap %#x: %v", op, a.ID, g.Addr, err)
			}
		}
	}
	fault.Point(op + ":unmapped")
	s.rec.Updates = slices.Delete(s.rec.Updates, idx, idx+1)
	if err := s.writeState(); err != nil {
		return fmt.Errorf("%s %s: %w", op, a.ID, err)
	}
	fault.Point(op + ":recorded")
	if postErr != nil {
		return fmt.Errorf("%s %s: the update is undone, but %w", op, a.ID, postErr)
	}
	return nil
}

// ours reports whether a region is still mapped as livesplice left it: an
// anonymous mapping starting at its address and ending inside it (the
// clean-up after a crash must never unmap memory the program reused).
func (s *session) ours(g state.Region) bool {
	for _, m := range s.maps {
		if m.Start == g.Addr {
			return m.Path == "" && m.Inode == 0 && m.End <= g.Addr+g.Size
		}
	}
	return false
}

// mappedFlags sets the update's flags that are still mapped to v.
func (s *session) mappedFlags(a state.Applied, v byte) []ptrace.Write {
	var live []uint64
	for _, f := range a.Flags {
		var b [1]byte
		if s.p.ReadMem(f, b[:]) == nil {
			live = append(live, f)
		}
	}
	return flagWrites(live, v)
}

// flags reads an update's commit flags: how many are set, of how many.
func flags(mem memReader, a state.Applied) (set, total int) {
	for _, f := range a.Flags {
		var b [1]byte
		if mem.ReadMem(f, b[:]) == nil && b[0] == 1 {
			set++
		}
		total++
	}
	return set, total
}

// recoverInterrupted finishes or rolls back what an earlier livesplice
// left in flight (it was killed, or lost its terminal), before anything
// else touches the process. The commit flags tell what the program runs.
func (s *session) recoverInterrupted() error {
	for i := 0; i < len(s.rec.Updates); i++ {
		a := s.rec.Updates[i]
		if a.Status == state.StatusApplied {
			continue
		}
		set, total := flags(s.p, a)
		if set == total && total > 0 && (a.Status == state.StatusCommitting || a.Status == state.StatusUndoing) {
			// The flip happened (apply) or had not yet (undo): the new
			// code runs, so the update is applied.
			s.opt.logf("recovery: %s was interrupted while %s; it is applied", a.ID, a.Status)
			s.rec.Updates[i].Status = state.StatusApplied
			if err := s.writeState(); err != nil {
				return fmt.Errorf("recover %s: %w", a.ID, err)
			}
			continue
		}
		s.opt.logf("recovery: %s was interrupted while %s; taking it out", a.ID, a.Status)
		if err := s.remove(i, "recover"); err != nil {
			return fmt.Errorf("recover interrupted %s: %w", a.ID, err)
		}
		i--
		if err := s.refresh(); err != nil {
			return err
		}
	}
	return nil
}
