package unwind

import (
	"sync"

	"golang.org/x/sys/unix"

	"livesplice/internal/procfs"
)

// The CFI of a file is the same in every process that maps it, and
// parsing libc's .eh_frame is most of an unwinder's cost: a fleet
// operation (apply --all over a thousand processes) parses each file
// once. Files are told apart by what fstat says of the mapped file itself
// (device, inode, change time, size), not by the path in the maps, so a
// file rewritten in place or an inode number reused is parsed anew.
// Parsed modules are never changed, so processes share them.

type fileID struct {
	dev, ino, size uint64
	ctime          unix.Timespec
}

var sharedCFI = struct {
	sync.Mutex
	m map[fileID]*module
}{m: map[fileID]*module{}}

// loadShared returns the CFI of the file behind mapping m of process pid,
// parsed once per file.
func loadShared(pid int, m procfs.Mapping) *module {
	f, err := procfs.OpenMapped(pid, m)
	if err != nil {
		return &module{name: m.Path, err: err}
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return &module{name: m.Path, err: err}
	}
	id := fileID{dev: st.Dev, ino: st.Ino, size: uint64(st.Size), ctime: st.Ctim}
	sharedCFI.Lock()
	mod := sharedCFI.m[id]
	sharedCFI.Unlock()
	if mod != nil {
		return mod
	}
	mod = &module{name: m.Path}
	mod.err = mod.loadFile(pid, m)
	if mod.err == nil {
		sharedCFI.Lock()
		sharedCFI.m[id] = mod
		sharedCFI.Unlock()
	}
	return mod
}
