package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"livesplice/internal/procfs"
	"livesplice/internal/repo"
	"livesplice/internal/state"
)

// object is an executable or library mapped by a running process.
type object struct {
	Name    string // file name
	Soname  string
	BuildID string
}

// key names a target object in the agent's records.
func (o object) key() string { return o.Name + "@" + o.BuildID }

// running is a process and the objects it maps.
type running struct {
	Pid     int
	Comm    string
	Objects []object
	Patched bool // maps livesplice's state record: some update was applied
}

// scanner reads the objects of processes, reading each file's build-id
// once however many processes map it.
type scanner struct {
	ids map[string]object // by device and inode
}

func (s *scanner) scan(pid int) (running, error) {
	r := running{Pid: pid}
	maps, err := procfs.ReadMaps(pid)
	if err != nil {
		return r, fmt.Errorf("process %d: %w", pid, err)
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	r.Comm = strings.TrimSpace(string(comm))
	seen := map[string]bool{}
	for _, m := range maps {
		if m.Path == state.MappingPath {
			r.Patched = true
		}
		if m.Inode == 0 || !strings.HasPrefix(m.Path, "/") || m.Offset != 0 {
			continue
		}
		fid := m.Dev + ":" + strconv.FormatUint(m.Inode, 10)
		if seen[fid] {
			continue
		}
		seen[fid] = true
		o, ok := s.ids[fid]
		if !ok {
			o = object{Name: filepath.Base(strings.TrimSuffix(m.Path, " (deleted)"))}
			if f, err := procfs.OpenMapped(pid, m); err == nil {
				o.BuildID, o.Soname, _ = repo.BuildIDOf(f)
				f.Close()
			}
			s.ids[fid] = o
		}
		r.Objects = append(r.Objects, o)
	}
	return r, nil
}
