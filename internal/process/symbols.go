package process

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"livesplice/internal/symfile"
)

// GDBSymbols writes, into dir, an ELF symbol file for each region of code
// the updates applied to process pid placed (its functions and call frame
// information) and a gdb script that loads them all, and returns the
// script's path: `gdb -p PID -x SCRIPT` then names and unwinds through
// patched code. The process is not stopped.
func GDBSymbols(pid int, dir string) (string, error) {
	rec, mem, err := show(pid)
	if err != nil {
		return "", err
	}
	defer mem.f.Close()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	var script strings.Builder
	fmt.Fprintf(&script, "# livesplice: symbols of the updates applied to process %d\n", pid)
	for _, a := range rec.Updates {
		for ri, r := range a.Regions {
			if r.Text == 0 {
				continue
			}
			in := func(addr uint64) bool { return addr >= r.Addr && addr < r.Addr+r.Size }
			var syms []symfile.Sym
			for _, d := range a.Defs {
				if in(d.Addr) {
					syms = append(syms, symfile.Sym{Name: d.Name, Addr: d.Addr, Size: d.Size, Func: d.Func})
				}
			}
			// gdb reads one .eh_frame per file: one file per frame, the
			// symbols in the first.
			files := []symfile.File{{TextAddr: r.Addr, TextSize: r.Text, Syms: syms}}
			for _, fr := range a.Frames {
				if !in(fr.Addr) || fr.Size > 1<<24 {
					continue
				}
				b := make([]byte, fr.Size)
				if err := mem.ReadMem(fr.Addr, b); err != nil {
					return "", fmt.Errorf("process %d: read call frame information of %s: %w", pid, a.ID, err)
				}
				last := &files[len(files)-1]
				if last.Frame != nil {
					files = append(files, symfile.File{TextAddr: r.Addr, TextSize: r.Text})
					last = &files[len(files)-1]
				}
				last.FrameAddr, last.Frame = fr.Addr, b
			}
			for fi := range files {
				data, err := symfile.Write(&files[fi])
				if err != nil {
					return "", fmt.Errorf("symbols of %s: %w", a.ID, err)
				}
				path := filepath.Join(dir, fmt.Sprintf("%d-%s-%d-%d.elf", pid, a.ID, ri, fi))
				if err := os.WriteFile(path, data, 0o644); err != nil {
					return "", err
				}
				abs, _ := filepath.Abs(path)
				fmt.Fprintf(&script, "add-symbol-file %s\n", abs)
			}
		}
	}
	path := filepath.Join(dir, fmt.Sprintf("livesplice-%d.gdb", pid))
	if err := os.WriteFile(path, []byte(script.String()), 0o644); err != nil {
		return "", err
	}
	return path, nil
}

// PerfMap adds the functions that applied updates placed in process pid to
// /tmp/perf-PID.map, the file perf reads to name code in anonymous memory
// (lines "START SIZE name", hex). Lines already there are kept, so a JIT
// runtime's own entries survive, and running it twice adds nothing twice.
// It returns the file's path.
func PerfMap(pid int) (string, error) {
	rec, mem, err := show(pid)
	if err != nil {
		return "", err
	}
	mem.f.Close()
	path := fmt.Sprintf("/tmp/perf-%d.map", pid)
	have := map[string]bool{}
	if old, err := os.ReadFile(path); err == nil {
		for _, l := range strings.Split(string(old), "\n") {
			have[l] = true
		}
	}
	var add strings.Builder
	for _, a := range rec.Updates {
		for _, d := range a.Defs {
			l := fmt.Sprintf("%x %x %s [livesplice %s]", d.Addr, d.Size, d.Name, a.ID)
			if d.Func && d.Size > 0 && !have[l] {
				have[l] = true
				add.WriteString(l + "\n")
			}
		}
	}
	// O_NOFOLLOW: /tmp is shared; never write through someone's symlink.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return "", err
	}
	if _, err := f.WriteString(add.String()); err != nil {
		f.Close()
		return "", err
	}
	return path, f.Close()
}
