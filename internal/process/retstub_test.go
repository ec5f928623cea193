package process

import (
	"encoding/binary"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"livesplice/internal/amd64"
	"livesplice/internal/procfs"
	"livesplice/internal/unwind"
)

// fakeMem is memory made of 8-byte words.
type fakeMem map[uint64]uint64

func (m fakeMem) ReadMem(addr uint64, b []byte) error {
	for i := 0; i < len(b); i += 8 {
		v, ok := m[addr+uint64(i)]
		if !ok {
			return fmt.Errorf("%#x not mapped", addr+uint64(i))
		}
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], v)
		copy(b[i:], w[:])
	}
	return nil
}

// The stubs' call frame information leads an unwinder from a thread held
// at a stub's system call, and from a frame whose return address is a
// stub's entry, to the original return address with the caller's rsp.
func TestStubFrames(t *testing.T) {
	r := stubRegion{addr: 0x7f0000000000}
	code, _, err := r.images()
	if err != nil || len(code) != stubCount*amd64.ReturnStubSize {
		t.Fatalf("images: %d bytes, %v", len(code), err)
	}
	const orig, callerRsp = 0x401234, 0x7ffe0000f000
	mem := fakeMem{r.target(3): orig}
	maps := []procfs.Mapping{{Start: r.addr, End: r.addr + stubRegionSize, Perms: "r-xp", Path: stubMappingPath}}
	u := unwind.New(0, maps, mem)
	s := &session{stubs: r}
	s.addStubFrames(u)
	for _, c := range []struct {
		name string
		rip  uint64
		rsp  uint64
	}{
		{"entry", r.entry(3), callerRsp},
		{"held at the system call", r.catch(3), callerRsp - 24},
		{"before the jump", r.code(3) + 23, callerRsp},
	} {
		regs := unix.PtraceRegs{Rip: c.rip, Rsp: c.rsp}
		frames, uerr := u.Unwind(&regs, 2)
		t.Logf("%s: %v", c.name, uerr) // the caller's code is not mapped here
		if len(frames) < 2 || frames[0].CFA != callerRsp+8 || frames[1].PC != orig {
			t.Errorf("%s: frames %+v, want the stub's CFA %#x and then pc %#x", c.name, frames, uint64(callerRsp+8), uint64(orig))
		}
	}
}
