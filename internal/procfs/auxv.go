package procfs

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// atEntry is AT_ENTRY, the program's entry point, in the auxiliary vector.
const atEntry = 9

// entryFromAuxv returns AT_ENTRY from the bytes of /proc/PID/auxv (pairs of
// 64-bit words, ended by AT_NULL).
func entryFromAuxv(b []byte) (uint64, error) {
	for i := 0; i+16 <= len(b); i += 16 {
		k, v := binary.LittleEndian.Uint64(b[i:]), binary.LittleEndian.Uint64(b[i+8:])
		if k == atEntry && v != 0 {
			return v, nil
		}
		if k == 0 {
			break
		}
	}
	return 0, fmt.Errorf("no AT_ENTRY in the auxiliary vector")
}

// Entry reads the entry point of the program thread tid of pid runs (tid
// 0: the process's own auxv; a zombie leader's is unreadable, a live
// thread's is not).
func Entry(pid, tid int) (uint64, error) {
	path := Dir(pid) + "/auxv"
	if tid > 0 {
		path = fmt.Sprintf("/proc/%d/task/%d/auxv", pid, tid)
	}
	b, err := ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("process %d: read auxv: %w", pid, err)
	}
	e, err := entryFromAuxv(b)
	if err != nil {
		return 0, fmt.Errorf("process %d: %w", pid, err)
	}
	return e, nil
}

// PagePresent reports whether the page holding addr is in pid's page
// tables (or swapped out: also once touched), from /proc/PID/pagemap.
func PagePresent(pid int, addr uint64) (bool, error) {
	const pageSize = 4096
	fd, err := openRaw(Dir(pid) + "/pagemap")
	if err != nil {
		return false, fmt.Errorf("process %d: %w", pid, err)
	}
	defer unix.Close(fd)
	var e [8]byte
	if n, err := unix.Pread(fd, e[:], int64(addr/pageSize*8)); err != nil || n != 8 {
		if err == nil {
			err = fmt.Errorf("short read")
		}
		return false, fmt.Errorf("process %d: pagemap: %w", pid, err)
	}
	v := binary.LittleEndian.Uint64(e[:])
	return v&(1<<63) != 0 || v&(1<<62) != 0, nil
}
