// Package elfsym indexes the symbols of an ELF executable or shared library
// the way the live patcher looks them up: static symbols by source file and
// name, global ones by name, with build-id and soname.
package elfsym

import (
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Sym is one defined symbol.
type Sym struct {
	Name   string
	File   string // STT_FILE scope of a local symbol
	Value  uint64 // link-time address
	Size   uint64
	Type   elf.SymType
	Bind   elf.SymBind
	Dyn    bool // from .dynsym
	Hidden bool // a non-default symbol version (name@VER, not name@@VER)
}

// Table is the symbol index of one ELF file.
type Table struct {
	Type      elf.Type
	BuildID   string
	Soname    string
	Entry     uint64
	FirstLoad uint64 // vaddr of the first PT_LOAD, rounded down to the page
	Stripped  bool   // no .symtab
	locals    map[string][]Sym
	globals   map[string][]Sym
	Loads     []elf.ProgHeader
	TLS       *elf.ProgHeader
	starts    []uint64    // every defined symbol's address, sorted
	spans     [][2]uint64 // every defined symbol's [start, end), sorted by start
	code      [][2]uint64 // executable sections: [start, end)
}

// ErrNotFound is returned for a symbol the file does not define.
var ErrNotFound = errors.New("symbol not found")

// Load reads the symbol tables of an ELF file.
func Load(r io.ReaderAt) (*Table, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 || f.Class != elf.ELFCLASS64 {
		return nil, fmt.Errorf("not an x86-64 ELF file")
	}
	t := &Table{Type: f.Type, Entry: f.Entry, BuildID: fileBuildID(f), locals: map[string][]Sym{}, globals: map[string][]Sym{}}
	first := true
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_LOAD:
			t.Loads = append(t.Loads, p.ProgHeader)
			if first {
				t.FirstLoad = p.Vaddr &^ 0xfff
				first = false
			}
		case elf.PT_TLS:
			ph := p.ProgHeader
			t.TLS = &ph
		}
	}
	if libs, err := f.DynString(elf.DT_SONAME); err == nil && len(libs) > 0 {
		t.Soname = libs[0]
	}
	for _, sec := range f.Sections {
		if sec.Flags&elf.SHF_EXECINSTR != 0 && sec.Flags&elf.SHF_ALLOC != 0 {
			t.code = append(t.code, [2]uint64{sec.Addr, sec.Addr + sec.Size})
		}
	}
	syms, err := f.Symbols()
	if err != nil {
		t.Stripped = true
	}
	defer func() { slices.Sort(t.starts); sortSpans(t.spans) }()
	file := ""
	for _, s := range syms {
		typ := elf.ST_TYPE(s.Info)
		bind := elf.ST_BIND(s.Info)
		if typ == elf.STT_FILE {
			file = s.Name
			continue
		}
		if s.Section == elf.SHN_UNDEF || s.Name == "" || typ == elf.STT_SECTION {
			continue
		}
		y := Sym{Name: s.Name, Value: s.Value, Size: s.Size, Type: typ, Bind: bind}
		if s.Section != elf.SHN_ABS && typ != elf.STT_TLS {
			t.starts = append(t.starts, s.Value)
			t.spans = append(t.spans, [2]uint64{s.Value, s.Value + s.Size})
		}
		if bind == elf.STB_LOCAL {
			y.File = file
			t.addLocal(y)
		} else {
			t.globals[s.Name] = append(t.globals[s.Name], y)
		}
	}
	dyn, err := f.DynamicSymbols()
	if err == nil {
		for _, s := range dyn {
			if s.Section == elf.SHN_UNDEF || s.Name == "" {
				continue
			}
			y := Sym{Name: s.Name, Value: s.Value, Size: s.Size, Type: elf.ST_TYPE(s.Info), Bind: elf.ST_BIND(s.Info), Dyn: true}
			y.Hidden = s.HasVersion && s.VersionIndex.IsHidden()
			t.globals[s.Name] = append(t.globals[s.Name], y)
		}
	}
	return t, nil
}

// BuildID returns the GNU build-id (the NT_GNU_BUILD_ID note of a PT_NOTE
// segment) of the ELF file r as lowercase hex, or "" when the file has
// none. It is an error only when r is not an ELF file.
func BuildID(r io.ReaderAt) (string, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return "", fmt.Errorf("not an ELF file: %w", err)
	}
	defer f.Close()
	return fileBuildID(f), nil
}

// fileBuildID is BuildID of a parsed ELF file: the first build-id note of
// its PT_NOTE segments.
func fileBuildID(f *elf.File) string {
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		if id := noteBuildID(p, f.ByteOrder); id != "" {
			return id
		}
	}
	return ""
}

const ntGNUBuildID = 3 // NT_GNU_BUILD_ID

// noteBuildID finds the build-id note among the notes of one PT_NOTE
// segment (its first 64 KiB: build-ids are near the start).
func noteBuildID(p *elf.Prog, bo binary.ByteOrder) string {
	data, err := io.ReadAll(io.LimitReader(p.Open(), 1<<16))
	if err != nil {
		return ""
	}
	for len(data) >= 12 {
		nsz := uint64(bo.Uint32(data[0:]))
		dsz := uint64(bo.Uint32(data[4:]))
		typ := bo.Uint32(data[8:])
		off := 12 + align4(nsz)
		end := off + align4(dsz)
		if end > uint64(len(data)) {
			return ""
		}
		if typ == ntGNUBuildID && nsz == 4 && string(data[12:16]) == "GNU\x00" {
			return hex.EncodeToString(data[off : off+dsz])
		}
		data = data[end:]
	}
	return ""
}

func align4(n uint64) uint64 { return (n + 3) &^ 3 }

// Room returns how many bytes from address v (link-time) up to the next
// symbol or the end of v's executable section, whichever comes first: the
// bytes after a function that no other symbol's code can start in. It is 0
// for a file without .symtab (its local functions are unknown) or outside
// any executable section.
func (t *Table) Room(v uint64) uint64 {
	if t.Stripped {
		return 0
	}
	for _, c := range t.code {
		if v >= c[0] && v < c[1] {
			end := c[1]
			i, _ := slices.BinarySearch(t.starts, v+1)
			if i < len(t.starts) && t.starts[i] < end {
				end = t.starts[i]
			}
			return end - v
		}
	}
	return 0
}

// addLocal indexes a static symbol by its file and name, by its name alone
// (once, for a symbol of the linker's own scope, whose file is ""), and
// the linker's own ones apart (Demoted).
func (t *Table) addLocal(y Sym) {
	t.locals[y.File+"\x00"+y.Name] = append(t.locals[y.File+"\x00"+y.Name], y)
	if y.File != "" {
		t.locals["\x00"+y.Name] = append(t.locals["\x00"+y.Name], y)
	} else {
		t.locals["\x00"+y.Name+"\x00"] = append(t.locals["\x00"+y.Name+"\x00"], y)
	}
}

// Local returns the static symbols called name in source file file (any
// file when file is empty).
func (t *Table) Local(file, name string) []Sym { return t.locals[file+"\x00"+name] }

// BoundHere returns where a symbol that the objects linked into this file
// define globally went when the linker made it local to the file (hidden
// or internal visibility, or a version script that does not export it):
// the locals called name in the linker's own scope (the symbols after the
// empty STT_FILE that ld puts before them, or a recovered table's "");
// failing that, the locals of that name in source file file; failing
// that, the one local of that name if there is only one (which may also
// be an unrelated static: a caller that can find the name elsewhere, in
// another library, tries that first; run-pre matching proves a replaced
// function). It returns nil when the file defines name globally, since
// then that definition is the one references bind to.
func (t *Table) BoundHere(name, file string) []Sym {
	if len(t.globals[name]) > 0 {
		return nil
	}
	if d := t.Demoted(name); len(d) > 0 {
		return d
	}
	if s := t.locals["\x00"+name]; len(s) > 0 {
		if file != "" {
			if f := t.locals[file+"\x00"+name]; len(f) > 0 {
				return f
			}
		}
		if len(s) == 1 {
			return s
		}
	}
	return nil
}

// Demoted returns the locals called name in the linker's own scope (after
// the empty STT_FILE ld puts before the symbols it made local, or a
// recovered table's ""), unless the file defines name globally: certainly
// a global of the objects that the linker bound inside the file.
func (t *Table) Demoted(name string) []Sym {
	if len(t.globals[name]) > 0 {
		return nil
	}
	return t.locals["\x00"+name+"\x00"]
}

// Global returns the defined global symbols called name, default versions
// first.
func (t *Table) Global(name string) []Sym {
	var out, hidden []Sym
	for _, y := range t.globals[name] {
		if y.Hidden {
			hidden = append(hidden, y)
		} else {
			out = append(out, y)
		}
	}
	return append(out, hidden...)
}

// WithSymbols returns a copy of t that also holds syms, as if they had
// been in the file's .symtab: the symbol table of a stripped file,
// recovered elsewhere. The copy counts as not stripped, so Room sees the
// recovered functions.
func (t *Table) WithSymbols(syms []Sym) *Table {
	c := *t
	c.locals = make(map[string][]Sym, len(t.locals)+2*len(syms))
	for k, v := range t.locals {
		c.locals[k] = slices.Clone(v)
	}
	c.globals = make(map[string][]Sym, len(t.globals)+len(syms))
	for k, v := range t.globals {
		c.globals[k] = slices.Clone(v)
	}
	c.starts = slices.Clone(t.starts)
	c.spans = slices.Clone(t.spans)
	for _, y := range syms {
		if y.Bind == elf.STB_LOCAL {
			c.addLocal(y)
		} else {
			c.globals[y.Name] = append(c.globals[y.Name], y)
		}
		c.starts = append(c.starts, y.Value)
		c.spans = append(c.spans, [2]uint64{y.Value, y.Value + y.Size})
	}
	slices.Sort(c.starts)
	sortSpans(c.spans)
	c.Stripped = false
	return &c
}

func sortSpans(s [][2]uint64) {
	slices.SortFunc(s, func(a, b [2]uint64) int {
		if a[0] != b[0] {
			if a[0] < b[0] {
				return -1
			}
			return 1
		}
		if a[1] < b[1] {
			return -1
		}
		if a[1] > b[1] {
			return 1
		}
		return 0
	})
}

// Before returns, for code at address v (link-time), the last symbol
// that starts before v in v's executable section: its start, and the
// furthest end of the symbols before v there (equal to start for a last
// symbol of size 0, as crtstuff's functions are, that nothing encloses). ok is false for a file without
// .symtab, for v outside any executable section or inside a symbol that
// starts before it, and when no symbol starts before v in its section.
func (t *Table) Before(v uint64) (start, end uint64, ok bool) {
	if t.Stripped {
		return 0, 0, false
	}
	for _, c := range t.code {
		if v < c[0] || v >= c[1] {
			continue
		}
		i, _ := slices.BinarySearchFunc(t.spans, v, func(s [2]uint64, v uint64) int {
			if s[0] < v {
				return -1
			}
			return 1
		})
		if i == 0 || t.spans[i-1][0] < c[0] {
			return 0, 0, false
		}
		start = t.spans[i-1][0]
		for j := i - 1; j >= 0 && t.spans[j][0] >= c[0]; j-- {
			s := t.spans[j]
			if s[1] > v {
				return 0, 0, false
			}
			end = max(end, s[1])
		}
		return start, end, true
	}
	return 0, 0, false
}
