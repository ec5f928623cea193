package deb

import (
	"cmp"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"livesplice/internal/amd64"
	"livesplice/internal/elfsym"
	"livesplice/internal/runpre"
	"livesplice/internal/update"
)

// Recovering the symbols of a stripped file that the plain build does not
// reproduce byte for byte (another binutils placed the sections
// elsewhere, ...): Ksplice's way of finding the kernel's symbols. The plain
// build's objects hold every function with its relocations; the installed
// file's .dynsym says where its exported functions are. Starting from
// those, each object's section is placed by run-pre matching its bytes
// against the installed file outside relocation fields (runpre.MatchCode),
// and the relocation fields of matched code say where the sections they
// refer to lie: the static functions (placed in turn only once their own
// code matches) and data (placed by a reference that cannot go through a
// PLT stub or a preemptible GOT slot, and whose bytes match where it has
// any). What is never reached this way is not recovered, and an update
// that needs it is refused by name (Recovered.Check).

// fileImage is the installed file as the dynamic loader maps it: its load
// segments and its dynamic relocations by place.
type fileImage struct {
	f        *os.File
	loads    []elf.ProgHeader
	relative []relPlace      // R_X86_64_RELATIVE, sorted by place
	symbolic map[uint64]bool // places a symbol's dynamic relocation fills
}

type relPlace struct{ at, value uint64 }

// openImage reads the installed file as the dynamic loader would map it
// at its link-time addresses, with its relative relocations applied.
func openImage(path string) (*fileImage, *elf.File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	f, err := elf.NewFile(fh)
	if err != nil {
		fh.Close()
		return nil, nil, err
	}
	m := &fileImage{f: fh, symbolic: map[uint64]bool{}}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			m.loads = append(m.loads, p.ProgHeader)
		}
	}
	for _, s := range f.Sections {
		if s.Type != elf.SHT_RELA || s.Flags&elf.SHF_ALLOC == 0 {
			continue
		}
		data, err := s.Data()
		if err != nil {
			fh.Close()
			return nil, nil, fmt.Errorf("%s: %w", s.Name, err)
		}
		for i := 0; i+24 <= len(data); i += 24 {
			at := binary.LittleEndian.Uint64(data[i:])
			info := binary.LittleEndian.Uint64(data[i+8:])
			add := binary.LittleEndian.Uint64(data[i+16:])
			if elf.R_X86_64(info&0xffffffff) == elf.R_X86_64_RELATIVE {
				m.relative = append(m.relative, relPlace{at, add})
			} else {
				m.symbolic[at] = true
			}
		}
	}
	sort.Slice(m.relative, func(i, j int) bool { return m.relative[i].at < m.relative[j].at })
	return m, f, nil
}

func (m *fileImage) Close() error { return m.f.Close() }

// ReadMem reads link-time addresses of the mapped image.
func (m *fileImage) ReadMem(addr uint64, b []byte) error {
	n := uint64(len(b))
	for _, p := range m.loads {
		if addr < p.Vaddr || addr+n > p.Vaddr+p.Memsz || addr+n < addr {
			continue
		}
		clear(b)
		off := addr - p.Vaddr
		if off < p.Filesz {
			k := min(n, p.Filesz-off)
			if _, err := m.f.ReadAt(b[:k], int64(p.Off+off)); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
		}
		i := sort.Search(len(m.relative), func(i int) bool { return m.relative[i].at+8 > addr })
		for ; i < len(m.relative) && m.relative[i].at < addr+n; i++ {
			var v [8]byte
			binary.LittleEndian.PutUint64(v[:], m.relative[i].value)
			for j := range v {
				if a := m.relative[i].at + uint64(j); a >= addr && a < addr+n {
					b[a-addr] = v[j]
				}
			}
		}
		return nil
	}
	return fmt.Errorf("%#x+%d: not in the file's loaded segments", addr, n)
}

// inLoad reports whether [a, a+n) lies in one loaded segment, an
// executable one for code (data may share one with code: an older
// binutils without -z separate-code).
func (m *fileImage) inLoad(a, n uint64, code bool) bool {
	for _, p := range m.loads {
		if a >= p.Vaddr && a+n <= p.Vaddr+p.Memsz && a+n >= a && (!code || p.Flags&elf.PF_X != 0) {
			return true
		}
	}
	return false
}

// object is one relocatable object of the plain build.
type object struct {
	path   string
	file   string // its STT_FILE: the source file name its statics are scoped by
	secs   []*elf.Section
	syms   []elf.Symbol // syms[i-1] is symbol table index i
	relocs map[int][]rela
	data   map[int][]byte
}

type rela struct {
	off uint64
	typ uint32
	sym int // symbol table index
	add int64
}

func readObject(path string) (*object, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if f.Type != elf.ET_REL || f.Machine != elf.EM_X86_64 {
		return nil, fmt.Errorf("%s: not an x86-64 relocatable object", path)
	}
	o := &object{path: path, secs: f.Sections, relocs: map[int][]rela{}, data: map[int][]byte{}}
	if o.syms, err = f.Symbols(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, y := range o.syms {
		if elf.ST_TYPE(y.Info) == elf.STT_FILE {
			o.file = y.Name
			break
		}
	}
	for i, s := range f.Sections {
		if s.Type == elf.SHT_PROGBITS && s.Flags&elf.SHF_ALLOC != 0 {
			if o.data[i], err = s.Data(); err != nil {
				return nil, fmt.Errorf("%s: %s: %w", path, s.Name, err)
			}
		}
		if s.Type != elf.SHT_RELA {
			continue
		}
		raw, err := s.Data()
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, s.Name, err)
		}
		for j := 0; j+24 <= len(raw); j += 24 {
			info := binary.LittleEndian.Uint64(raw[j+8:])
			o.relocs[int(s.Info)] = append(o.relocs[int(s.Info)], rela{
				off: binary.LittleEndian.Uint64(raw[j:]),
				typ: uint32(info),
				sym: int(info >> 32),
				add: int64(binary.LittleEndian.Uint64(raw[j+16:])),
			})
		}
	}
	return o, nil
}

// placeable reports a section the linker copies whole into the file: code,
// data and bss, but not merged strings or constants (the linker takes them
// apart), thread-local data (addressed by offset) or frame tables.
func (o *object) placeable(si int) bool {
	if si <= 0 || si >= len(o.secs) {
		return false
	}
	s := o.secs[si]
	switch {
	case s.Flags&elf.SHF_ALLOC == 0, s.Flags&(elf.SHF_MERGE|elf.SHF_TLS) != 0, s.Size == 0:
		return false
	case s.Type != elf.SHT_PROGBITS && s.Type != elf.SHT_NOBITS:
		return false
	case s.Name == ".eh_frame" || strings.HasPrefix(s.Name, ".note"):
		return false
	}
	return true
}

type secKey struct{ obj, sec int }

type hyp struct {
	key   secKey
	base  uint64
	exact bool // read from a field that cannot go through a PLT stub or a preemptible GOT slot
}

// matcher places the sections of a plain build's objects in an installed
// file.
type matcher struct {
	img     *fileImage
	objs    []*object
	defs    map[string][]secSym // global definitions by name
	placed  map[secKey]uint64
	bad     map[secKey]string // sections proven not placeable (conflicting references)
	tried   map[hyp]bool
	queue   []hyp
	differs map[secKey]string // a reference that cannot be a PLT stub led to code that does not match
}

type secSym struct {
	obj int
	sym elf.Symbol
}

// matchRecover recovers the symbol table of the installed file inst from
// the objects that the plain build linked into its file of that name.
func matchRecover(inst string, objPaths []string) (*update.Symtab, []string, error) {
	img, f, err := openImage(inst)
	if err != nil {
		return nil, nil, err
	}
	defer img.Close()
	defer f.Close()
	id, err := elfsym.BuildID(img.f)
	if err == nil && id == "" {
		err = errors.New("no GNU build-id")
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", inst, err)
	}
	m := &matcher{img: img, defs: map[string][]secSym{}, placed: map[secKey]uint64{}, bad: map[secKey]string{},
		tried: map[hyp]bool{}, differs: map[secKey]string{}}
	for _, p := range objPaths {
		o, err := readObject(p)
		if err != nil {
			return nil, nil, err
		}
		m.objs = append(m.objs, o)
	}
	for oi, o := range m.objs {
		for _, y := range o.syms {
			if elf.ST_BIND(y.Info) == elf.STB_GLOBAL && defined(y) {
				m.defs[y.Name] = append(m.defs[y.Name], secSym{oi, y})
			}
		}
	}
	// Seeds: the exported functions and data, at their .dynsym addresses.
	dyn, err := f.DynamicSymbols()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: no dynamic symbols: %w", inst, err)
	}
	exported := map[string]uint64{}
	for _, y := range dyn {
		t := elf.ST_TYPE(y.Info)
		if y.Section == elf.SHN_UNDEF || y.Value == 0 || (t != elf.STT_FUNC && t != elf.STT_OBJECT) {
			continue
		}
		exported[y.Name] = y.Value
		if d := m.defs[y.Name]; len(d) == 1 {
			m.queue = append(m.queue, hyp{secKey{d[0].obj, int(d[0].sym.Section)}, y.Value - d[0].sym.Value, true})
		}
	}
	for len(m.queue) > 0 {
		h := m.queue[0]
		m.queue = m.queue[1:]
		m.try(h)
	}
	return m.symtab(id, exported)
}

func defined(y elf.Symbol) bool {
	return y.Section != elf.SHN_UNDEF && y.Section != elf.SHN_ABS && y.Section != elf.SHN_COMMON && y.Section < elf.SHN_LORESERVE
}

// try proves or drops one hypothesis about where a section lies.
func (m *matcher) try(h hyp) {
	o := m.objs[h.key.obj]
	if !o.placeable(h.key.sec) || m.bad[h.key] != "" {
		return
	}
	if at, ok := m.placed[h.key]; ok {
		if at != h.base && h.exact {
			m.bad[h.key] = fmt.Sprintf("referred to at %#x and matched at %#x", h.base, at)
		}
		return
	}
	if m.tried[h] {
		return
	}
	m.tried[h] = true
	s := o.secs[h.key.sec]
	code := s.Flags&elf.SHF_EXECINSTR != 0
	if !code && !h.exact {
		return // data is placed only by a reference that cannot mislead
	}
	if !m.img.inLoad(h.base, s.Size, code) {
		if h.exact {
			m.differs[h.key] = fmt.Sprintf("referred to at %#x, outside the file's segments", h.base)
		}
		return
	}
	if s.Type == elf.SHT_NOBITS {
		m.placed[h.key] = h.base
		return
	}
	tgt, c, err := o.code(h.key.sec)
	if err == nil {
		_, err = runpre.MatchCode(tgt, c, runpre.Candidate{Addr: h.base, Size: s.Size}, m.img)
	}
	if err != nil {
		if h.exact {
			m.differs[h.key] = err.Error()
		}
		return
	}
	m.placed[h.key] = h.base
	m.follow(h.key, h.base, c)
}

// code is a section of an object as run-pre matching wants it: its bytes
// and relocations, one symbol per relocation.
func (o *object) code(si int) (*update.Target, *update.Code, error) {
	c := &update.Code{Data: o.data[si]}
	t := &update.Target{}
	for _, r := range o.relocs[si] {
		if elf.R_X86_64(r.typ) == elf.R_X86_64_NONE {
			continue
		}
		if update.RelocWidth(r.typ) == 0 {
			return nil, nil, fmt.Errorf("%s: relocation %v in %s", filepath.Base(o.path), elf.R_X86_64(r.typ), o.secs[si].Name)
		}
		c.Relocs = append(c.Relocs, update.Reloc{Offset: r.off, Type: r.typ, Symbol: len(t.Symbols), Addend: r.add})
		t.Symbols = append(t.Symbols, update.Symbol{Kind: update.SymLocal, Name: fmt.Sprintf("%s+%#x", o.secs[si].Name, r.off)})
	}
	return t, c, nil
}

// follow reads every relocation field of matched code at base and queues
// where the sections they refer to must lie.
func (m *matcher) follow(k secKey, base uint64, c *update.Code) {
	o := m.objs[k.obj]
	run := make([]byte, len(c.Data))
	if m.img.ReadMem(base, run) != nil {
		return
	}
	rs := o.relocs[k.sec]
	ri := 0
	for _, r := range rs {
		if elf.R_X86_64(r.typ) == elf.R_X86_64_NONE {
			continue
		}
		rel := c.Relocs[ri]
		ri++
		typ := elf.R_X86_64(r.typ)
		if update.TLSClass(r.typ) != "" || typ == elf.R_X86_64_GOTTPOFF {
			continue // a thread-local variable: an offset, not an address
		}
		p := base + rel.Offset
		s, rewritten, err := amd64.Observe(c.Data, run, rel.Offset, rel.Type, p, rel.Addend, m.img)
		if err != nil || r.sym <= 0 || r.sym > len(o.syms) {
			continue
		}
		exact := true
		switch {
		case update.RelocIsGOT(r.typ) && rewritten == 0:
			// The address came from a GOT slot: trust it only if no symbol's
			// dynamic relocation fills the slot (the dynamic loader could
			// put another object's definition there).
			v := int64(int32(binary.LittleEndian.Uint32(run[rel.Offset:])))
			exact = !m.img.symbolic[uint64(int64(p)+v-rel.Addend)]
		case typ == elf.R_X86_64_PLT32:
			y := o.syms[r.sym-1]
			exact = elf.ST_BIND(y.Info) == elf.STB_LOCAL || (defined(y) && elf.ST_VISIBILITY(y.Other) != elf.STV_DEFAULT)
		case typ == elf.R_X86_64_64 || typ == elf.R_X86_64_32 || typ == elf.R_X86_64_32S:
			exact = !m.img.symbolic[p]
		}
		y := o.syms[r.sym-1]
		switch {
		case elf.ST_TYPE(y.Info) == elf.STT_SECTION:
			m.queue = append(m.queue, hyp{secKey{k.obj, int(y.Section)}, s, exact})
		case defined(y):
			m.queue = append(m.queue, hyp{secKey{k.obj, int(y.Section)}, s - y.Value, exact})
		case elf.ST_BIND(y.Info) != elf.STB_LOCAL:
			if d := m.defs[y.Name]; len(d) == 1 {
				m.queue = append(m.queue, hyp{secKey{d[0].obj, int(d[0].sym.Section)}, s - d[0].sym.Value, exact})
			}
		}
	}
}

// symtab lists the functions and objects of every placed section, checked
// against the exported addresses and against each other, and names the
// functions and objects of the sections it could not place.
func (m *matcher) symtab(id string, exported map[string]uint64) (*update.Symtab, []string, error) {
	type span struct {
		a, b uint64
		k    secKey
	}
	var spans []span
	for k, at := range m.placed {
		if m.bad[k] == "" {
			spans = append(spans, span{at, at + m.objs[k.obj].secs[k.sec].Size, k})
		}
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].a < spans[j].a })
	for i := 1; i < len(spans); i++ {
		if spans[i].a < spans[i-1].b {
			a, b := spans[i-1].k, spans[i].k
			return nil, nil, fmt.Errorf("matching placed %s of %s and %s of %s over each other", m.objs[a.obj].secs[a.sec].Name, filepath.Base(m.objs[a.obj].path), m.objs[b.obj].secs[b.sec].Name, filepath.Base(m.objs[b.obj].path))
		}
	}
	st := &update.Symtab{BuildID: id}
	var unproven []string
	for oi, o := range m.objs {
		for _, y := range o.syms {
			t := elf.ST_TYPE(y.Info)
			if y.Name == "" || !defined(y) || (t != elf.STT_FUNC && t != elf.STT_OBJECT) || !o.placeable(int(y.Section)) {
				continue
			}
			k := secKey{oi, int(y.Section)}
			at, ok := m.placed[k]
			if !ok || m.bad[k] != "" {
				unproven = append(unproven, y.Name)
				continue
			}
			s := update.SymtabSym{Name: y.Name, Addr: at + y.Value, Size: y.Size, Func: t == elf.STT_FUNC}
			switch {
			case elf.ST_BIND(y.Info) == elf.STB_LOCAL:
				s.File = o.file
			case elf.ST_VISIBILITY(y.Other) == elf.STV_DEFAULT:
				s.Global = true
				if v, ok := exported[y.Name]; ok && v != s.Addr {
					return nil, nil, fmt.Errorf("matching placed %s at %#x, the file exports it at %#x", y.Name, s.Addr, v)
				}
			}
			// A hidden global stays local with no file, as the linker
			// leaves it in a .symtab (elfsym.Table.BoundHere).
			st.Symbols = append(st.Symbols, s)
		}
	}
	slices.SortFunc(st.Symbols, func(a, b update.SymtabSym) int {
		if a.Addr != b.Addr {
			return cmp.Compare(a.Addr, b.Addr)
		}
		return strings.Compare(a.Name, b.Name)
	})
	sort.Strings(unproven)
	return st, slices.Compact(unproven), nil
}
