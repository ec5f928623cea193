package process

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"livesplice/internal/elfsym"
	"livesplice/internal/procfs"
	"livesplice/internal/update"
)

// Finding a target: an update names each target by its path and soname
// and records the GNU build-id of the pre build. The rule:
//
//   - a mapped file whose build-id equals the target's pre build-id is
//     that target, whatever it is called (a renamed copy, a container's
//     image under another path);
//   - with no such file, the target is found by file name or soname, as
//     the running build is usually made with other flags than the pre
//     build and so has another build-id.
//
// Either way run-pre matching is the proof: a file found by name that runs
// other code is refused function by function. Files are only ever read
// through /proc/PID/map_files, which names the very file mapped, in any
// mount namespace, and never follows a path the target controls.

// fileKey identifies a file on this host across processes and mount
// namespaces; ctime tells a file rewritten in place (or an inode number
// reused) from the one read before.
type fileKey struct {
	dev, ino uint64
	ctime    unix.Timespec
}

// buildIDs caches the build-id of every file read, so that a thousand
// processes mapping one library cost one ELF read.
var buildIDs = struct {
	sync.Mutex
	m map[fileKey]string
}{m: map[fileKey]string{}}

// tables caches symbol tables (read-only once loaded) the same way: a
// fleet operation reads libc's once, not once per process.
var tables = struct {
	sync.Mutex
	m map[fileKey]*elfsym.Table
}{m: map[fileKey]*elfsym.Table{}}

// keyOf identifies an open file.
func keyOf(f *os.File) (fileKey, error) {
	// f.Stat, not unix.Fstat(f.Fd()): Fd costs two fcntl calls.
	fi, err := f.Stat()
	if err != nil {
		return fileKey{}, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileKey{}, fmt.Errorf("stat %s: no device and inode", f.Name())
	}
	return fileKey{dev: st.Dev, ino: st.Ino, ctime: unix.Timespec(st.Ctim)}, nil
}

// cachedTable loads the symbol table of an open ELF file, once per file.
func cachedTable(f *os.File) (*elfsym.Table, error) {
	key, err := keyOf(f)
	if err != nil {
		return nil, err
	}
	tables.Lock()
	t := tables.m[key]
	tables.Unlock()
	if t != nil {
		return t, nil
	}
	t, err = elfsym.Load(io.NewSectionReader(f, 0, 1<<40))
	if err != nil {
		return nil, err
	}
	tables.Lock()
	tables.m[key] = t
	tables.Unlock()
	return t, nil
}

// mappedBuildID returns the GNU build-id of the file behind mapping m of
// process pid ("" if it has none or is no ELF file).
func mappedBuildID(pid int, m procfs.Mapping) (string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End))
	if err != nil {
		// A leader that called pthread_exit has no map_files of its own.
		f, err = os.Open(fmt.Sprintf("%s/map_files/%x-%x", procfs.Dir(pid), m.Start, m.End))
	}
	if err != nil {
		return "", fmt.Errorf("process %d: open mapped file %s: %w", pid, m.Path, err)
	}
	defer f.Close()
	key, err := keyOf(f)
	if err != nil {
		return "", fmt.Errorf("process %d: %w", pid, err)
	}
	buildIDs.Lock()
	id, ok := buildIDs.m[key]
	buildIDs.Unlock()
	if ok {
		return id, nil
	}
	id, _ = elfsym.BuildID(f) // not an ELF file: no build-id
	buildIDs.Lock()
	buildIDs.m[key] = id
	buildIDs.Unlock()
	return id, nil
}

// moduleBuildID is the build-id of a mapped object, read through the
// mapping of its ELF header (or remembered by ids, if not nil).
func moduleBuildID(pid int, m *module, ids *scanIDs) string {
	for _, mp := range m.maps {
		if mp.Offset == 0 {
			id, _ := ids.of(pid, mp)
			return id
		}
	}
	return ""
}

// scanIDs remembers, within one fleet scan, each file's build-id by the
// device and inode that /proc/PID/maps shows, so that a thousand processes
// mapping libc cost one look at it; a new scan starts afresh (an inode may
// be reused). A nil *scanIDs remembers nothing.
type scanIDs struct {
	mu sync.Mutex
	m  map[string]string // "dev inode" -> build-id
}

func (b *scanIDs) of(pid int, mp procfs.Mapping) (string, error) {
	if b == nil {
		return mappedBuildID(pid, mp)
	}
	key := mp.Dev + " " + strconv.FormatUint(mp.Inode, 10)
	b.mu.Lock()
	id, ok := b.m[key]
	b.mu.Unlock()
	if ok {
		return id, nil
	}
	id, err := mappedBuildID(pid, mp)
	if err != nil {
		return "", err // gone, or not ours to read: no verdict on this file
	}
	b.mu.Lock()
	b.m[key] = id
	b.mu.Unlock()
	return id, nil
}

// findTarget finds the mapped object an update target is for: by build-id,
// else by file name or soname (the rule above).
func findTarget(pid int, mods []*module, t *update.Target, ids *scanIDs) (*module, error) {
	if t.PreBuildID != "" {
		var found []*module
		for _, m := range mods {
			if moduleBuildID(pid, m, ids) == t.PreBuildID {
				found = append(found, m)
			}
		}
		switch len(found) {
		case 1:
			return found[0], found[0].load(pid)
		case 0:
		default:
			return nil, fmt.Errorf("%s: %d objects with its build-id %s are mapped in process %d", filepath.Base(t.Path), len(found), t.PreBuildID, pid)
		}
	}
	return findModule(pid, mods, t.Path, t.Soname)
}

// discovery finds the processes that map a target of an update; seen
// also serves the scan's apply sessions (Options.ids).
type discovery struct {
	f     *update.File
	names map[string]bool
	ids   map[string]bool
	seen  *scanIDs
}

func newDiscovery(f *update.File) *discovery {
	d := &discovery{f: f, names: targetNames(f), ids: map[string]bool{}, seen: &scanIDs{m: map[string]string{}}}
	for _, t := range f.Targets {
		if t.PreBuildID != "" {
			d.ids[t.PreBuildID] = true
		}
	}
	return d
}

// maps reports whether process pid maps an object that is one of the
// update's targets by build-id, file name or soname: a candidate, which
// run-pre matching then accepts or refuses.
func (d *discovery) maps(pid int) bool {
	maps, err := procfs.ReadMaps(pid)
	if err != nil {
		return false
	}
	return d.mapsIn(pid, modules(maps))
}

func (d *discovery) mapsIn(pid int, mods []*module) bool {
	for _, m := range mods {
		if d.names[filepath.Base(m.path)] {
			return true
		}
	}
	if len(d.ids) == 0 {
		return false
	}
	for _, m := range mods {
		for _, mp := range m.maps {
			if mp.Offset != 0 {
				continue
			}
			id, err := d.seen.of(pid, mp)
			if err != nil {
				break
			}
			if d.ids[id] {
				return true
			}
			break
		}
	}
	return false
}
