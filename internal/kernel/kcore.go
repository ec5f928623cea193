package kernel

import (
	"debug/elf"
	"fmt"
	"io"
	"os"
)

// Kcore reads kernel memory through /proc/kcore, an ELF core file whose
// PT_LOAD segments map kernel virtual addresses to file offsets.
type Kcore struct {
	r    io.ReaderAt
	segs []kcoreSeg
	file *os.File
}

type kcoreSeg struct{ vaddr, size, off uint64 }

// OpenKcore opens /proc/kcore (root only; needs CONFIG_PROC_KCORE).
func OpenKcore(path string) (*Kcore, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read kernel text: %w", err)
	}
	k, err := NewKcore(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	k.file = f
	return k, nil
}

// NewKcore parses the program headers of an ELF core image.
func NewKcore(r io.ReaderAt) (*Kcore, error) {
	ef, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("not an ELF core: %w", err)
	}
	if ef.Class != elf.ELFCLASS64 || ef.Type != elf.ET_CORE {
		return nil, fmt.Errorf("not a 64-bit ELF core file")
	}
	k := &Kcore{r: r}
	for _, p := range ef.Progs {
		if p.Type != elf.PT_LOAD || p.Filesz == 0 || p.Vaddr+p.Filesz < p.Vaddr || p.Off+p.Filesz < p.Off {
			continue
		}
		k.segs = append(k.segs, kcoreSeg{vaddr: p.Vaddr, size: p.Filesz, off: p.Off})
	}
	if len(k.segs) == 0 {
		return nil, fmt.Errorf("no memory segments")
	}
	return k, nil
}

// Close releases the file.
func (k *Kcore) Close() error {
	if k.file != nil {
		return k.file.Close()
	}
	return nil
}

// ReadMem reads len(b) bytes of kernel memory at addr. The range must lie
// in one segment.
func (k *Kcore) ReadMem(addr uint64, b []byte) error {
	n := uint64(len(b))
	for _, s := range k.segs {
		if addr >= s.vaddr && addr-s.vaddr < s.size && s.size-(addr-s.vaddr) >= n {
			if _, err := k.r.ReadAt(b, int64(s.off+(addr-s.vaddr))); err != nil {
				return fmt.Errorf("read kernel memory at %#x: %w", addr, err)
			}
			return nil
		}
	}
	return fmt.Errorf("kernel address %#x+%d is not in /proc/kcore", addr, n)
}
