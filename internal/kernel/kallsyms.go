package kernel

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Sym is one line of /proc/kallsyms.
type Sym struct {
	Addr   uint64
	Type   byte   // nm-style: T/t text, D/d data, B/b bss, R/r rodata, A, W, ...
	Name   string //
	Module string // "" for vmlinux, else the module's name
}

// IsText reports whether the symbol is code.
func (s Sym) IsText() bool { return s.Type == 't' || s.Type == 'T' || s.Type == 'w' || s.Type == 'W' }

// Kallsyms is the running kernel's symbol table, in /proc/kallsyms order
// (which is the order livepatch counts sympos in).
type Kallsyms struct {
	Syms   []Sym
	byName map[string][]int // indexes into Syms, in file order
	sorted []int            // indexes into Syms by address
}

// ReadKallsyms reads /proc/kallsyms (or a copy of it).
func ReadKallsyms(path string) (*Kallsyms, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read kernel symbols: %w", err)
	}
	defer f.Close()
	ks, err := ParseKallsyms(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ks, nil
}

// ParseKallsyms parses kallsyms text: "ADDR TYPE NAME[\t[MODULE]]" per line.
func ParseKallsyms(r io.Reader) (*Kallsyms, error) {
	ks := &Kallsyms{byName: map[string][]int{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	nonzero := false
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		s, err := parseKallsymsLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		nonzero = nonzero || s.Addr != 0
		ks.byName[s.Name] = append(ks.byName[s.Name], len(ks.Syms))
		ks.Syms = append(ks.Syms, s)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(ks.Syms) == 0 {
		return nil, fmt.Errorf("no symbols")
	}
	if !nonzero {
		return nil, ErrHiddenAddrs
	}
	ks.sorted = make([]int, len(ks.Syms))
	for i := range ks.sorted {
		ks.sorted[i] = i
	}
	sort.SliceStable(ks.sorted, func(a, b int) bool { return ks.Syms[ks.sorted[a]].Addr < ks.Syms[ks.sorted[b]].Addr })
	return ks, nil
}

func parseKallsymsLine(line []byte) (Sym, error) {
	var s Sym
	rest := string(line)
	if i := strings.IndexByte(rest, '\t'); i >= 0 {
		mod := strings.TrimSpace(rest[i+1:])
		if len(mod) < 3 || mod[0] != '[' || mod[len(mod)-1] != ']' {
			return s, fmt.Errorf("bad module field %q", mod)
		}
		s.Module = mod[1 : len(mod)-1]
		rest = rest[:i]
	}
	f := strings.Fields(rest)
	if len(f) != 3 || len(f[1]) != 1 {
		return s, fmt.Errorf("malformed symbol line %q", line)
	}
	addr, err := strconv.ParseUint(f[0], 16, 64)
	if err != nil {
		return s, fmt.Errorf("bad address %q", f[0])
	}
	s.Addr, s.Type, s.Name = addr, f[1][0], f[2]
	return s, nil
}

// Lookup returns the symbols called name in module ("" = vmlinux), in
// kallsyms order.
func (ks *Kallsyms) Lookup(name, module string) []Sym {
	var out []Sym
	for _, i := range ks.byName[name] {
		if ks.Syms[i].Module == module {
			out = append(out, ks.Syms[i])
		}
	}
	return out
}

// Any returns every symbol called name, in vmlinux or any module.
func (ks *Kallsyms) Any(name string) []Sym {
	out := make([]Sym, 0, len(ks.byName[name]))
	for _, i := range ks.byName[name] {
		out = append(out, ks.Syms[i])
	}
	return out
}

// HasModule reports whether any symbol belongs to module.
func (ks *Kallsyms) HasModule(module string) bool {
	for _, s := range ks.Syms {
		if s.Module == module {
			return true
		}
	}
	return false
}

// At returns the symbol that addr falls in (the last one at or below it),
// preferring a text symbol among several at the same address.
func (ks *Kallsyms) At(addr uint64) (Sym, bool) {
	j := sort.Search(len(ks.sorted), func(k int) bool { return ks.Syms[ks.sorted[k]].Addr > addr })
	if j == 0 {
		return Sym{}, false
	}
	best := ks.Syms[ks.sorted[j-1]]
	for k := j - 1; k >= 0 && ks.Syms[ks.sorted[k]].Addr == best.Addr; k-- {
		if s := ks.Syms[ks.sorted[k]]; s.IsText() {
			best = s
		}
	}
	return best, true
}

// AllAt returns every symbol at exactly addr, in kallsyms order: several
// names share an address (__x86_indirect_thunk_array and
// __x86_indirect_thunk_rax), and At picks only one of them.
func (ks *Kallsyms) AllAt(addr uint64) []Sym {
	j := sort.Search(len(ks.sorted), func(k int) bool { return ks.Syms[ks.sorted[k]].Addr >= addr })
	var out []Sym
	for ; j < len(ks.sorted) && ks.Syms[ks.sorted[j]].Addr == addr; j++ {
		out = append(out, ks.Syms[ks.sorted[j]])
	}
	return out
}

// Extent returns how many bytes from addr to the next symbol at a higher
// address (an upper bound on the size of the function at addr), or 0 when
// none follows.
func (ks *Kallsyms) Extent(addr uint64) uint64 {
	j := sort.Search(len(ks.sorted), func(k int) bool { return ks.Syms[ks.sorted[k]].Addr > addr })
	if j == len(ks.sorted) {
		return 0
	}
	return ks.Syms[ks.sorted[j]].Addr - addr
}
