package procfs

import (
	"debug/elf"
	"encoding/binary"
	"os"
	"testing"
)

// The entry point read from this test binary's auxv is its ELF header's
// entry moved by where the executable is mapped; a vector without
// AT_ENTRY, or cut short, is an error.
func TestEntry(t *testing.T) {
	e, err := Entry(os.Getpid(), 0)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	maps, err := ReadMaps(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range maps {
		if m.Contains(e) && m.Exec() {
			found = true
		}
	}
	if !found || (f.Type == elf.ET_EXEC && e != f.Entry) {
		t.Fatalf("AT_ENTRY %#x: not in an executable mapping, or not the header's %#x", e, f.Entry)
	}
	// The test has run its entry point: that page is present.
	if present, err := PagePresent(os.Getpid(), e); err != nil || !present {
		t.Fatalf("PagePresent(entry) = %v, %v", present, err)
	}
	vec := func(pairs ...uint64) []byte {
		b := make([]byte, 8*len(pairs))
		for i, v := range pairs {
			binary.LittleEndian.PutUint64(b[8*i:], v)
		}
		return b
	}
	if got, err := entryFromAuxv(vec(6, 4096, 9, 0x401000, 0, 0)); err != nil || got != 0x401000 {
		t.Fatalf("entryFromAuxv = %#x, %v", got, err)
	}
	for _, b := range [][]byte{vec(6, 4096, 0, 0, 9, 0x401000), vec(6, 4096), vec(9, 0x401000)[:12], nil} {
		if _, err := entryFromAuxv(b); err == nil {
			t.Errorf("entryFromAuxv(% x): no error", b)
		}
	}
}
