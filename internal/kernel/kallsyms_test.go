package kernel

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

const sampleKallsyms = `ffffffff81000000 T _text
ffffffff81000000 T startup_64
ffffffff812a96d0 t cmdline_proc_show
ffffffff812a9700 t show_val
ffffffff812b0000 t show_val
ffffffff812b0040 T seq_puts
0000000000020cc0 D current_task
ffffffffc0201000 t livepatch_cmdline_proc_show	[livepatch_sample]
ffffffffc0201040 t show_val	[some_mod]
`

func TestParseKallsyms(t *testing.T) {
	ks, err := ParseKallsyms(strings.NewReader(sampleKallsyms))
	if err != nil {
		t.Fatal(err)
	}
	if got := ks.Lookup("show_val", ""); len(got) != 2 || got[0].Addr != 0xffffffff812a9700 || got[1].Addr != 0xffffffff812b0000 {
		t.Errorf("Lookup(show_val, vmlinux) = %+v", got)
	}
	if got := ks.Lookup("show_val", "some_mod"); len(got) != 1 || got[0].Module != "some_mod" || got[0].Type != 't' {
		t.Errorf("Lookup(show_val, some_mod) = %+v", got)
	}
	if got := ks.Any("show_val"); len(got) != 3 {
		t.Errorf("Any(show_val) = %+v", got)
	}
	if !ks.HasModule("livepatch_sample") || ks.HasModule("absent") {
		t.Error("HasModule")
	}
	if s, ok := ks.At(0xffffffff812a96d5); !ok || s.Name != "cmdline_proc_show" {
		t.Errorf("At = %+v %v", s, ok)
	}
	if s, ok := ks.At(0xffffffff81000003); !ok || s.Addr != 0xffffffff81000000 {
		t.Errorf("At(_text+3) = %+v", s)
	}
	if _, ok := ks.At(0x10); ok {
		t.Error("At below every symbol found one")
	}
	if e := ks.Extent(0xffffffff812a96d0); e != 0x30 {
		t.Errorf("Extent = %#x", e)
	}
}

func TestParseKallsymsRefuses(t *testing.T) {
	for _, in := range []string{
		"",
		"zzzz T foo\n",
		"ffff T\n",
		"ffff TT foo\n",
		"ffff T foo\t[mod\n",
	} {
		if _, err := ParseKallsyms(strings.NewReader(in)); err == nil {
			t.Errorf("ParseKallsyms(%q) succeeded", in)
		}
	}
	// kptr_restrict: every address zero.
	_, err := ParseKallsyms(strings.NewReader("0000000000000000 T _text\n0000000000000000 t foo\n"))
	if !errors.Is(err, ErrHiddenAddrs) {
		t.Errorf("zero addresses: %v", err)
	}
}

func FuzzKallsyms(f *testing.F) {
	f.Add([]byte(sampleKallsyms))
	f.Add([]byte("ffffffff81000000 T _text\t[\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ks, err := ParseKallsyms(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, s := range ks.Syms {
			ks.At(s.Addr)
			ks.Extent(s.Addr)
			if len(ks.Lookup(s.Name, s.Module)) == 0 {
				t.Fatalf("%+v not found by Lookup", s)
			}
		}
	})
}

// coreFile builds a minimal ELF core image with one PT_LOAD segment per
// (vaddr, data) pair.
func coreFile(segs map[uint64][]byte) []byte {
	var b bytes.Buffer
	hdr := make([]byte, 64)
	copy(hdr, elf.ELFMAG)
	hdr[4], hdr[5], hdr[6] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	le := binary.LittleEndian
	le.PutUint16(hdr[16:], uint16(elf.ET_CORE))
	le.PutUint16(hdr[18:], uint16(elf.EM_X86_64))
	le.PutUint32(hdr[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(hdr[32:], 64) // phoff
	le.PutUint16(hdr[52:], 64) // ehsize
	le.PutUint16(hdr[54:], 56) // phentsize
	le.PutUint16(hdr[56:], uint16(len(segs)))
	b.Write(hdr)
	off := uint64(64 + 56*len(segs))
	var data bytes.Buffer
	for va, d := range segs {
		ph := make([]byte, 56)
		le.PutUint32(ph[0:], uint32(elf.PT_LOAD))
		le.PutUint32(ph[4:], uint32(elf.PF_R|elf.PF_X))
		le.PutUint64(ph[8:], off+uint64(data.Len()))
		le.PutUint64(ph[16:], va)
		le.PutUint64(ph[32:], uint64(len(d)))
		le.PutUint64(ph[40:], uint64(len(d)))
		b.Write(ph)
		data.Write(d)
	}
	b.Write(data.Bytes())
	return b.Bytes()
}

func TestKcore(t *testing.T) {
	img := coreFile(map[uint64][]byte{0xffffffff81000000: {1, 2, 3, 4, 5, 6, 7, 8}})
	k, err := NewKcore(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	if err := k.ReadMem(0xffffffff81000002, b); err != nil || !bytes.Equal(b, []byte{3, 4, 5}) {
		t.Errorf("ReadMem = % x, %v", b, err)
	}
	if err := k.ReadMem(0xffffffff81000006, b); err == nil {
		t.Error("read past the segment succeeded")
	}
	if err := k.ReadMem(0x1000, b); err == nil {
		t.Error("read outside every segment succeeded")
	}
	if _, err := NewKcore(bytes.NewReader([]byte("not an elf file at all, no"))); err == nil {
		t.Error("NewKcore accepted garbage")
	}
}

func FuzzKcore(f *testing.F) {
	f.Add(coreFile(map[uint64][]byte{0xffffffff81000000: {1, 2, 3, 4}}), uint64(0xffffffff81000001), uint8(2))
	f.Fuzz(func(t *testing.T, img []byte, addr uint64, n uint8) {
		k, err := NewKcore(bytes.NewReader(img))
		if err != nil {
			return
		}
		_ = k.ReadMem(addr, make([]byte, n))
	})
}
