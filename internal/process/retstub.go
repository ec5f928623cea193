package process

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"livesplice/internal/amd64"
	"livesplice/internal/fault"
	"livesplice/internal/procfs"
	"livesplice/internal/ptrace"
	"livesplice/internal/unwind"
)

// The return stub region: where the safety check sends the return of a
// busy thread's outermost frame inside the code being replaced, so that
// the thread is caught the moment it leaves (amd64.ReturnStub). It is a
// private mapping of a memfd named livesplice-stubs, found again by that
// name by any later livesplice, and never unmapped: a redirected return
// may still be pending in a stack when livesplice is killed, and the stub
// must then forward it whenever it comes.
//
//	page 0  code: stubCount stubs of amd64.ReturnStubSize bytes (read, execute)
//	page 1  .eh_frame for them (read only)
//	page 2  data: per stub the original return address (8 bytes) and the
//	        pending byte (1 while a redirect to the stub is outstanding);
//	        then the registered byte (the .eh_frame was handed to libgcc)
const (
	stubMappingName   = "livesplice-stubs"
	stubMappingPath   = "/memfd:" + stubMappingName + " (deleted)"
	stubCount         = 64
	stubDataSize      = 16
	stubRegionSize    = 3 * page
	stubRegisteredOff = stubCount * stubDataSize // in the data page
)

// stubRegion is the process's return stub region: addr once found in
// the maps (its frames then go to every unwinder), ready once its code
// was checked or written (ensureStubs).
type stubRegion struct {
	addr  uint64
	ready bool
}

func (r stubRegion) code(i int) uint64    { return r.addr + uint64(i)*amd64.ReturnStubSize }
func (r stubRegion) entry(i int) uint64   { return r.code(i) + amd64.ReturnStubEntry }
func (r stubRegion) catch(i int) uint64   { return r.code(i) + amd64.ReturnStubSyscallEnd }
func (r stubRegion) target(i int) uint64  { return r.addr + 2*page + uint64(i)*stubDataSize }
func (r stubRegion) pending(i int) uint64 { return r.target(i) + 8 }
func (r stubRegion) frames() uint64       { return r.addr + page }

// index is the stub whose code holds pc, or -1.
func (r stubRegion) index(pc uint64) int {
	if r.addr == 0 || pc < r.addr || pc >= r.addr+stubCount*amd64.ReturnStubSize {
		return -1
	}
	return int((pc - r.addr) / amd64.ReturnStubSize)
}

// images are the region's code and .eh_frame pages.
func (r stubRegion) images() ([]byte, []byte, error) {
	code := make([]byte, 0, page)
	for i := 0; i < stubCount; i++ {
		b, err := amd64.ReturnStub(r.code(i), r.pending(i), r.target(i))
		if err != nil {
			return nil, nil, err
		}
		code = append(code, b...)
	}
	return code, amd64.ReturnStubFrames(r.frames(), r.addr, r.target(0), stubCount), nil
}

// findStubs finds the region by its name: its pages show as up to three
// mappings (one per protection) of the same memfd, at offsets that match
// their addresses.
func findStubs(maps []procfs.Mapping) (stubRegion, bool) {
	for i, m := range maps {
		if m.Path != stubMappingPath || m.Offset != 0 {
			continue
		}
		end := m.Start
		for _, n := range maps[i:] {
			if n.Path != stubMappingPath || n.Inode != m.Inode || n.Start != end || n.Offset != n.Start-m.Start {
				break
			}
			end = n.End
		}
		if end-m.Start == stubRegionSize {
			return stubRegion{addr: m.Start}, true
		}
	}
	return stubRegion{}, false
}

// addStubFrames gives u the stubs' call frame information, from what is
// known rather than read (the world may be stopped).
func (s *session) addStubFrames(u *unwind.Unwinder) {
	if eh := s.stubFrames(); eh != nil {
		u.AddFrames("livesplice-stubs", s.stubs.addr, s.stubs.addr+page, eh, s.stubs.frames())
	}
}

// stubFrames is the region's .eh_frame, encoded once per session: every
// check after a round of waiting needs it.
func (s *session) stubFrames() []byte {
	if s.stubs.addr == 0 {
		return nil
	}
	if s.stubEH == nil {
		s.stubEH = amd64.ReturnStubFrames(s.stubs.frames(), s.stubs.addr, s.stubs.target(0), stubCount)
	}
	return s.stubEH
}

// ensureStubs finds or makes the return stub region, while the process
// runs (but for the worker). Made: an anonymous mapping first (one page of it runs the
// chain of calls that makes the memfd), the memfd mapped over its first
// three pages, the code and frames written, protections set, the extra
// page unmapped. A livesplice killed on the way leaks a few pages or
// leaves a region whose code is checked and written again next time;
// nothing is redirected to a region before it is complete.
func (s *session) ensureStubs() error {
	if s.stubs.ready {
		return nil
	}
	r, found := s.stubs, s.stubs.addr != 0 // the session found it (unwinder)
	if !found {
		addr, err := s.makeStubs()
		if err != nil {
			return err
		}
		r = stubRegion{addr: addr}
	}
	code, eh, err := r.images()
	if err != nil {
		return err
	}
	cur := make([]byte, len(code))
	if err := s.p.ReadMem(r.addr, cur); err != nil {
		return fmt.Errorf("return stubs: %w", err)
	}
	if !found || !bytes.Equal(cur, code) {
		if err := s.p.WriteMem(r.frames(), eh); err != nil {
			return fmt.Errorf("return stubs: %w", err)
		}
		if err := s.p.WriteMem(r.addr, code); err != nil {
			return fmt.Errorf("return stubs: %w", err)
		}
		if _, err := s.syscall(unix.SYS_MPROTECT, r.addr, page, unix.PROT_READ|unix.PROT_EXEC); err != nil {
			return fmt.Errorf("return stubs: %w", err)
		}
		if _, err := s.syscall(unix.SYS_MPROTECT, r.frames(), page, unix.PROT_READ); err != nil {
			return fmt.Errorf("return stubs: %w", err)
		}
	}
	r.ready = true
	s.stubs = r
	return nil
}

// makeStubs maps the region: see ensureStubs.
func (s *session) makeStubs() (uint64, error) {
	addr, err := s.syscall(unix.SYS_MMAP, 0, stubRegionSize+page, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		return 0, fmt.Errorf("map return stubs: %w", err)
	}
	chain := addr + stubRegionSize
	name := addr + 2*page
	if err := s.p.WriteMem(name, append([]byte(stubMappingName), 0)); err != nil {
		s.munmap(addr, stubRegionSize+page)
		return 0, fmt.Errorf("return stubs: %w", err)
	}
	// Run again after a stall, a lost run's memfd mapping is simply
	// mapped over (MAP_FIXED) and its descriptor was closed.
	_, err = s.chain(chain, memfdCalls(0, name, stubRegionSize, addr, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_FIXED), nil)
	if err != nil {
		// Whatever ran (the chain closes its descriptor unless a call
		// failed before): the memfd's pages go with the rest.
		s.munmap(addr, stubRegionSize+page)
		return 0, fmt.Errorf("return stubs: %w", err)
	}
	fault.Point("safety:stubs-mapped")
	if err := s.munmap(chain, page); err != nil {
		s.opt.logf("return stubs: unmap %#x: %v", chain, err)
	}
	return addr, nil
}

// registerStubFrames hands the stubs' .eh_frame to the program's unwinder
// (libgcc), once per process, so that a C++ exception thrown while a
// return is redirected finds its way through the stub. It is never taken
// back (the region stays). The registered byte journals it: 2 while the
// call runs, 1 after. A livesplice killed during the call leaves 2, and
// since libgcc 13 and later may abort on frames registered twice, that process gets
// no redirects (errStubFramesInDoubt). libgcc takes a lock that a stopped
// thread may hold: it is called while the process runs (but for the
// worker, which makes the call).
func (s *session) registerStubFrames() error {
	flag := s.stubs.addr + 2*page + stubRegisteredOff
	var b [1]byte
	if err := s.p.ReadMem(flag, b[:]); err != nil {
		return err
	}
	switch b[0] {
	case 1:
		return nil
	case 2:
		return errStubFramesInDoubt
	}
	reg, ok := s.libgccFunc("__register_frame")
	if !ok {
		return nil
	}
	if err := s.p.WriteMem(flag, []byte{2}); err != nil {
		return err
	}
	fault.Point("safety:registering")
	_, err := s.p.Call(reg, frameCallTimeout, s.stubs.frames())
	if err == nil {
		err = s.p.WriteMem(flag, []byte{1})
	}
	if err != nil {
		return fmt.Errorf("hand the return stubs' call frame information to the program's unwinder: %w", err)
	}
	return nil
}

var errStubFramesInDoubt = errors.New("a livesplice was killed while handing the return stubs' call frame information to the program's unwinder")

// redirect is one busy frame's return sent through a stub.
type redirect struct {
	tid  int
	stub int
	slot uint64 // the stack word holding the return address
	orig uint64 // the return address it held
	ours bool   // written by this session (false: an earlier one's, still pending)
}

// busyReturn finds where thread b's outermost frame inside spans keeps
// its return address: the frames must be unwound exactly, and the word at
// CFA-8 must hold the caller's address.
func (s *session) busyReturn(b busy, spans []span) (slot, ret uint64, ok bool) {
	if !b.complete {
		return 0, 0, false
	}
	outer := -1
	for i, f := range b.frames {
		pc := f.PC
		if i > 0 {
			pc--
		}
		if _, in := inSpans(spans, pc); in {
			outer = i
		}
	}
	if outer < 0 || outer+1 >= len(b.frames) || b.frames[outer].CFA < 8 {
		return 0, 0, false
	}
	slot, ret = b.frames[outer].CFA-8, b.frames[outer+1].PC
	var w [8]byte
	if s.p.ReadMem(slot, w[:]) != nil || binary.LittleEndian.Uint64(w[:]) != ret {
		return 0, 0, false
	}
	return slot, ret, true
}

// stubsInUse tells which stubs may not be given a new redirect: those
// pending, and those any thread runs in or may return to (frames, or
// stack words where unwinding failed).
func (s *session) stubsInUse(reds []redirect) []bool {
	used := make([]bool, stubCount)
	data := make([]byte, stubCount*stubDataSize)
	if s.p.ReadMem(s.stubs.addr+2*page, data) != nil {
		for i := range used {
			used[i] = true
		}
		return used
	}
	for i := range used {
		used[i] = data[i*stubDataSize+8] != 0
	}
	mark := func(pc uint64) {
		if i := s.stubs.index(pc); i >= 0 {
			used[i] = true
		}
	}
	for _, v := range s.views {
		mark(v.rip)
		for _, f := range v.frames {
			mark(f.PC)
		}
		for _, w := range v.words {
			mark(w)
		}
	}
	for _, r := range reds {
		used[r.stub] = true
	}
	return used
}

// redirectBusy sends the returns of the busy threads it can through
// stubs (held threads are never busy), and returns the threads to watch,
// each with the address where it stops at its stub.
func (s *session) redirectBusy(b []busy, spans []span, reds *[]redirect) (map[int]uint64, error) {
	watch := map[int]uint64{}
	var writes []ptrace.Write
	var used []bool
	for _, t := range b {
		slot, ret, ok := s.busyReturn(t, spans)
		if !ok {
			continue
		}
		if i := s.stubs.index(ret); i >= 0 {
			// An earlier livesplice's redirect, still pending: its stub
			// catches the thread all the same.
			if ret != s.stubs.entry(i) {
				continue
			}
			*reds = append(*reds, redirect{tid: t.tid, stub: i, slot: slot, orig: ret})
			watch[t.tid] = s.stubs.catch(i)
			continue
		}
		if used == nil {
			used = s.stubsInUse(*reds)
		}
		i := -1
		for k, u := range used {
			if !u {
				i = k
				break
			}
		}
		if i < 0 {
			s.opt.logf("safety check: all %d return stubs in use; waiting for thread %d instead", stubCount, t.tid)
			continue
		}
		used[i] = true
		var tgt [9]byte
		binary.LittleEndian.PutUint64(tgt[:], ret)
		tgt[8] = 1
		var e [8]byte
		binary.LittleEndian.PutUint64(e[:], s.stubs.entry(i))
		// The stub's target and pending byte first, then the return
		// slot: a livesplice killed in between leaves a stub marked
		// pending that nothing uses (never one that jumps astray).
		writes = append(writes, ptrace.Write{Addr: s.stubs.target(i), Data: tgt[:]}, ptrace.Write{Addr: slot, Data: e[:]})
		*reds = append(*reds, redirect{tid: t.tid, stub: i, slot: slot, orig: ret, ours: true})
		watch[t.tid] = s.stubs.catch(i)
	}
	if len(writes) == 0 {
		return watch, nil
	}
	if fault.Enabled {
		for k, w := range writes {
			if _, err := s.p.WriteMems([]ptrace.Write{w}); err != nil {
				return nil, err
			}
			fault.Point(fmt.Sprintf("safety:redirect:%d", k+1))
		}
		return watch, nil
	}
	_, err := s.p.WriteMems(writes)
	return watch, err
}

// unredirect puts back, with the world stopped, every return slot of
// ours that its thread did not take (still holding the stub's entry),
// and frees those stubs; taken (thread: the stub it stopped at) are the
// returns taken, which cleared their pending byte themselves. A redirect
// not taken whose slot no longer holds the entry belongs to a frame left
// another way (an exception, longjmp): its stub is free as well.
func (s *session) unredirect(reds []redirect, taken map[int]int) {
	var writes []ptrace.Write
	for _, r := range reds {
		if i, ok := taken[r.tid]; !r.ours || ok && i == r.stub {
			continue
		}
		var w [8]byte
		if s.p.ReadMem(r.slot, w[:]) == nil && binary.LittleEndian.Uint64(w[:]) == s.stubs.entry(r.stub) {
			var o [8]byte
			binary.LittleEndian.PutUint64(o[:], r.orig)
			writes = append(writes, ptrace.Write{Addr: r.slot, Data: o[:]})
		}
		writes = append(writes, ptrace.Write{Addr: s.stubs.pending(r.stub), Data: []byte{0}})
	}
	if len(writes) > 0 {
		if _, err := s.p.WriteMems(writes); err != nil {
			s.opt.logf("safety check: put back redirected returns: %v", err)
		}
	}
}
