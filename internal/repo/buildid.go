package repo

import (
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
)

// BuildID returns the GNU build-id (hex, "" if the file has none) and the
// soname of an ELF executable or library: the keys of process targets.
func BuildID(path string) (id, soname string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	return BuildIDOf(f)
}

// BuildIDOf is BuildID of an open file (e.g. /proc/PID/map_files/...).
func BuildIDOf(r io.ReaderAt) (id, soname string, err error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return "", "", fmt.Errorf("not an ELF file: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data, err := io.ReadAll(io.LimitReader(p.Open(), 1<<16))
		if err != nil {
			continue
		}
		if id = gnuBuildID(data, f.ByteOrder); id != "" {
			break
		}
	}
	if names, err := f.DynString(elf.DT_SONAME); err == nil && len(names) > 0 {
		soname = names[0]
	}
	return id, soname, nil
}

// gnuBuildID finds the NT_GNU_BUILD_ID note in a PT_NOTE segment.
func gnuBuildID(data []byte, bo binary.ByteOrder) string {
	align4 := func(n uint64) uint64 { return (n + 3) &^ 3 }
	for len(data) >= 12 {
		nsz := uint64(bo.Uint32(data[0:]))
		dsz := uint64(bo.Uint32(data[4:]))
		typ := bo.Uint32(data[8:])
		off := 12 + align4(nsz)
		end := off + align4(dsz)
		if nsz > 1<<16 || dsz > 1<<16 || end > uint64(len(data)) {
			return ""
		}
		if typ == 3 /* NT_GNU_BUILD_ID */ && nsz == 4 && string(data[12:16]) == "GNU\x00" {
			return hex.EncodeToString(data[off : off+dsz])
		}
		data = data[end:]
	}
	return ""
}
