// Package procfs reads what /proc tells about a process: its memory map,
// threads and the files it maps, without following the target's paths
// into the host's file system where /proc/PID/map_files can be used.
package procfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Mapping is one line of /proc/PID/maps.
type Mapping struct {
	Start, End uint64
	Perms      string // e.g. "r-xp"
	Offset     uint64
	Dev        string
	Inode      uint64
	Path       string // may be empty, "[stack]", "/memfd:name (deleted)", ...
}

// Exec reports whether the mapping is executable.
func (m Mapping) Exec() bool { return len(m.Perms) > 2 && m.Perms[2] == 'x' }

// Contains reports whether addr lies in the mapping.
func (m Mapping) Contains(addr uint64) bool { return addr >= m.Start && addr < m.End }

// Dir returns the /proc directory to read pid's memory through (maps,
// mem, root): /proc/PID, or /proc/PID/task/TID of a live thread when the
// thread-group leader has exited (pthread_exit) while other threads run
// on. Such a zombie leader has no memory any more, so /proc/PID/maps is
// empty and mem and root are gone, although the process lives.
func Dir(pid int) string {
	dir := fmt.Sprintf("/proc/%d", pid)
	if !zombie(dir) {
		return dir
	}
	tids, _ := Tasks(pid)
	for _, tid := range tids {
		if t := fmt.Sprintf("%s/task/%d", dir, tid); tid != pid && !zombie(t) {
			return t
		}
	}
	return dir
}

// zombie reports whether the task of a /proc directory has exited.
func zombie(dir string) bool {
	b, err := ReadFile(dir + "/stat")
	if err != nil {
		return false // let the caller's own access report it
	}
	// pid (comm) state ...: comm may contain anything, even ") ".
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X')
}

// Exiting reports whether process pid has exited or is on its way out:
// it is gone, or every thread of it is a zombie or already exiting
// (PF_EXITING, set before a thread gives up its memory). A leader that
// called pthread_exit is a zombie too, but then other threads live on.
func Exiting(pid int) bool {
	tids, err := Tasks(pid)
	if err != nil {
		return errors.Is(err, fs.ErrNotExist)
	}
	const pfExiting = 0x4
	for _, tid := range tids {
		b, err := ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
		if err != nil {
			continue // gone meanwhile
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			return false
		}
		f := strings.Fields(string(b[i+1:])) // state ppid pgrp session tty tpgid flags ...
		if len(f) < 7 {
			return false
		}
		flags, _ := strconv.ParseUint(f[6], 10, 64)
		if f[0] != "Z" && f[0] != "X" && flags&pfExiting == 0 {
			return false
		}
	}
	return true
}

// ReadMaps reads the memory map of process pid. A process that has no
// mappings has exited (a zombie): that is an error wrapping ESRCH, not an
// empty map, so that callers never mistake it for a program without the
// object they look for.
func ReadMaps(pid int) ([]Mapping, error) {
	// A leader that called pthread_exit shows an empty map: only then is
	// it worth finding a live thread's (Dir reads the stat file to tell).
	maps, err := readMaps(fmt.Sprintf("/proc/%d/maps", pid))
	if err == nil && len(maps) == 0 {
		if dir := Dir(pid); dir != fmt.Sprintf("/proc/%d", pid) {
			maps, err = readMaps(dir + "/maps")
		}
	}
	if err == nil && len(maps) == 0 {
		err = fmt.Errorf("no memory map: %w (it exited)", syscall.ESRCH)
	}
	return maps, err
}

func readMaps(path string) ([]Mapping, error) {
	b, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseMaps(bytes.NewReader(b))
}

// ParseMaps parses the text of /proc/PID/maps.
func ParseMaps(r io.Reader) ([]Mapping, error) {
	// Whole, then by lines: a fleet run reads thousands of maps, and a
	// scanner's buffer per read was most of its garbage.
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	out := make([]Mapping, 0, bytes.Count(data, []byte{'\n'})+1)
	text := string(data)
	for text != "" {
		line, rest, _ := strings.Cut(text, "\n")
		text = rest
		if line == "" {
			continue
		}
		m, err := parseMapLine(line)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func parseMapLine(line string) (Mapping, error) {
	var m Mapping
	// address perms offset dev inode [path]; path may contain spaces.
	rest := line
	field := func() string {
		rest = strings.TrimLeft(rest, " ")
		i := strings.IndexByte(rest, ' ')
		if i < 0 {
			f := rest
			rest = ""
			return f
		}
		f := rest[:i]
		rest = rest[i:]
		return f
	}
	addr := field()
	lo, hi, ok := strings.Cut(addr, "-")
	if !ok {
		return m, fmt.Errorf("maps line %q: bad address", line)
	}
	var err error
	if m.Start, err = strconv.ParseUint(lo, 16, 64); err != nil {
		return m, fmt.Errorf("maps line %q: %w", line, err)
	}
	if m.End, err = strconv.ParseUint(hi, 16, 64); err != nil {
		return m, fmt.Errorf("maps line %q: %w", line, err)
	}
	m.Perms = field()
	if m.Offset, err = strconv.ParseUint(field(), 16, 64); err != nil {
		return m, fmt.Errorf("maps line %q: %w", line, err)
	}
	m.Dev = field()
	if m.Inode, err = strconv.ParseUint(field(), 10, 64); err != nil {
		return m, fmt.Errorf("maps line %q: %w", line, err)
	}
	m.Path = strings.TrimLeft(rest, " ")
	return m, nil
}

// Tasks lists the thread ids of a process, sorted.
func Tasks(pid int) ([]int, error) {
	names, err := ReadDirNames(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, err
	}
	tids := make([]int, 0, len(names))
	for _, name := range names {
		if tid, err := strconv.Atoi(name); err == nil {
			tids = append(tids, tid)
		}
	}
	sort.Ints(tids)
	return tids, nil
}

// Status returns the value of one field of /proc/PID/status ("" if absent).
func Status(pid int, field string) (string, error) {
	data, err := ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", err
	}
	for _, line := range bytes.Split(data, []byte{'\n'}) {
		k, v, ok := strings.Cut(string(line), ":")
		if ok && k == field {
			return strings.TrimSpace(v), nil
		}
	}
	return "", nil
}

// OpenMapped opens the file behind a file-backed mapping through
// /proc/PID/map_files, which works across mount namespaces and never
// follows a path the target controls; it falls back to /proc/PID/root.
func OpenMapped(pid int, m Mapping) (*os.File, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End))
	if err == nil {
		return f, nil
	}
	if !strings.HasPrefix(m.Path, "/") {
		return nil, fmt.Errorf("open mapped file of %#x: %w", m.Start, err)
	}
	f, err2 := os.Open(filepath.Join(Dir(pid), "root", m.Path))
	if err2 != nil {
		return nil, fmt.Errorf("open mapped file %s: %w", m.Path, err)
	}
	return f, nil
}

// Blocked lists the threads of pid that sleep inside a system call
// (/proc/PID/task/TID/syscall starts with the call's number).
func Blocked(pid int) []int {
	tids, _ := Tasks(pid)
	var out []int
	for _, tid := range tids {
		b, err := ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", pid, tid))
		if err == nil && len(b) > 0 && b[0] >= '0' && b[0] <= '9' {
			out = append(out, tid)
		}
	}
	return out
}

// Others lists every process but the caller and PID 1, in pid order: what
// a fleet operation may touch (init only ever when named by pid).
func Others() []int {
	names, _ := ReadDirNames("/proc")
	var out []int
	self := os.Getpid()
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err == nil && pid != self && pid != 1 {
			out = append(out, pid)
		}
	}
	sort.Ints(out)
	return out
}

// ReadFile reads a whole /proc file through a raw descriptor. os.Open
// costs four more system calls than the open itself (nonblocking mode on,
// registering with the poller, which refuses /proc files, and off again
// for Fd), and a fleet run opens tens of /proc files per process.
func ReadFile(path string) ([]byte, error) {
	fd, err := openRaw(path)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	b := make([]byte, 0, 4096)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := unix.Read(fd, b[len(b):cap(b)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return b, nil
		}
		b = b[:len(b)+n]
	}
}

// ReadDirNames lists a /proc directory's entries (without . and ..)
// through a raw descriptor, as ReadFile.
func ReadDirNames(path string) ([]string, error) {
	fd, err := openRaw(path)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var names []string
	buf := make([]byte, 8192)
	for {
		n, err := unix.ReadDirent(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "readdirent", Path: path, Err: err}
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

func openRaw(path string) (int, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
}
