package repo

import (
	"debug/elf"
	"io"
	"os"

	"livesplice/internal/elfsym"
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

// BuildIDOf is BuildID of an open file (e.g. /proc/PID/map_files/...). The
// build-id is elfsym.BuildID's; an error means r is not an ELF file.
func BuildIDOf(r io.ReaderAt) (id, soname string, err error) {
	if id, err = elfsym.BuildID(r); err != nil {
		return "", "", err
	}
	if f, err := elf.NewFile(r); err == nil {
		if names, err := f.DynString(elf.DT_SONAME); err == nil && len(names) > 0 {
			soname = names[0]
		}
	}
	return id, soname, nil
}
