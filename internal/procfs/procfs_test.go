package procfs

import (
	"os"
	"strings"
	"testing"
)

func TestParseMaps(t *testing.T) {
	text := "55d0c0a00000-55d0c0a02000 r--p 00000000 fe:00 247766                     /usr/bin/with space\n" +
		"\n" +
		"7f0000000000-7f0000001000 rw-s 00001000 00:01 1234 /memfd:livesplice-state (deleted)\n" +
		"7ffe00000000-7ffe00021000 rw-p 00000000 00:00 0                          [stack]" // no final newline
	maps, err := ParseMaps(strings.NewReader(text))
	if err != nil || len(maps) != 3 {
		t.Fatalf("ParseMaps = %+v, %v; want 3 mappings", maps, err)
	}
	if m := maps[0]; m.Start != 0x55d0c0a00000 || m.End != 0x55d0c0a02000 || m.Perms != "r--p" || m.Dev != "fe:00" || m.Inode != 247766 || m.Path != "/usr/bin/with space" {
		t.Errorf("first: %+v", m)
	}
	if m := maps[1]; m.Offset != 0x1000 || m.Path != "/memfd:livesplice-state (deleted)" {
		t.Errorf("second: %+v", m)
	}
	if m := maps[2]; m.Path != "[stack]" || m.Inode != 0 {
		t.Errorf("third: %+v", m)
	}
	for _, bad := range []string{"zz-10 r--p 0 00:00 0\n", "10 r--p 0 00:00 0\n", "10-20 r--p x 00:00 0\n", "10-20 r--p 0 00:00 y\n"} {
		if _, err := ParseMaps(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseMaps(%q) did not fail", bad)
		}
	}
}

func TestReadMapsOwn(t *testing.T) {
	maps, err := ReadMaps(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	found := false
	for _, m := range maps {
		found = found || m.Path == exe
	}
	if !found {
		t.Fatalf("own executable %s not in %d mappings", exe, len(maps))
	}
}
