// Package layout reads the memory layout of C struct and union types from
// the DWARF of object files and compares two builds' layouts. The create
// step refuses an update whose changed code sees a struct or union laid
// out differently from the running program's: objects that exist have the
// old layout, and new code would read them wrong.
package layout

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"fmt"
	"sort"
	"strings"
)

// Member is one field of a struct or union.
type Member struct {
	Name      string
	Offset    int64  // bytes from the start of the type
	Type      string // short name of the field's type
	BitSize   int64  // bit-field width, 0 for a whole field
	BitOffset int64  // bit-field position (DW_AT_data_bit_offset)
}

// Type is a struct or union: its size and members.
type Type struct {
	Name    string // "struct conn", "union u", or a typedef's name for an anonymous one
	Size    int64
	Members []Member
}

// Types maps type names to layouts.
type Types map[string]*Type

// FromObject reads the layouts in an ELF object's DWARF: every struct and
// union when funcs is nil, else those reachable from the named functions
// (their return types, parameters and local variables, also of the
// functions inlined into them) and from the
// variables declared at file scope (the objects a program has). An object
// without debug information has none.
func FromObject(data []byte, funcs []string) (Types, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("read object: %w", err)
	}
	defer f.Close()
	info := f.Section(".debug_info")
	if info == nil {
		return Types{}, nil
	}
	d, err := f.DWARF()
	if err != nil {
		return nil, fmt.Errorf("read DWARF: %w", err)
	}
	return read(d, funcs, int(min(info.Size, 1<<30))+1)
}

// Read reads layouts from DWARF data (see FromObject).
func Read(d *dwarf.Data, funcs []string) (Types, error) {
	return read(d, funcs, 1<<24)
}

// maxPasses bounds the passes that follow inlined functions into inlined
// functions.
const maxPasses = 8

// read reads at most maxEntries entries per pass. A pass that finds
// functions inlined into the wanted ones (whose types the changed code
// uses too) wants them as well, and the next pass walks them.
func read(d *dwarf.Data, funcs []string, maxEntries int) (Types, error) {
	want := map[string]bool{}
	for _, f := range funcs {
		want[f] = true
	}
	w := &walker{d: d, out: Types{}, seen: map[dwarf.Offset]bool{}, visited: map[visit]bool{}}
	inlined := map[dwarf.Offset]bool{}
	for pass := 0; pass < maxPasses; pass++ {
		grew, err := w.pass(funcs == nil, want, inlined, maxEntries)
		if err != nil {
			return nil, err
		}
		if !grew {
			break
		}
	}
	return w.out, nil
}

// pass reads every entry once (see read) and reports whether it found
// inlined functions not wanted before.
func (w *walker) pass(all bool, want map[string]bool, inlined map[dwarf.Offset]bool, maxEntries int) (bool, error) {
	grew := false
	r := w.d.Reader()
	depth := 0
	inFunc := 0 // depth of the wanted function being walked, 0 if none
	for n := 0; ; n++ {
		// Every entry takes a byte at least: damaged DWARF can make the
		// reader go round in circles, which must end.
		if n > maxEntries {
			return false, fmt.Errorf("read DWARF: more than %d entries", maxEntries)
		}
		e, err := r.Next()
		if err != nil {
			return false, fmt.Errorf("read DWARF: %w", err)
		}
		if e == nil {
			break
		}
		if e.Tag == 0 {
			depth--
			if inFunc > 0 && depth < inFunc {
				inFunc = 0
			}
			continue
		}
		if e.Tag == dwarf.TagCompileUnit {
			depth = 0
			inFunc = 0
		}
		take := all && (e.Tag == dwarf.TagStructType || e.Tag == dwarf.TagUnionType || e.Tag == dwarf.TagTypedef)
		switch {
		case inFunc > 0:
			take = true
			if o, ok := e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset); ok && e.Tag == dwarf.TagInlinedSubroutine && !inlined[o] {
				inlined[o] = true
				grew = true
			}
		case e.Tag == dwarf.TagVariable && depth == 1:
			take = true
		case e.Tag == dwarf.TagSubprogram && (want[name(e)] || inlined[e.Offset]):
			take = true
			if e.Children {
				inFunc = depth + 1
			}
		}
		if take {
			if err := w.entry(e); err != nil {
				return false, err
			}
		}
		if e.Children {
			depth++
		}
	}
	return grew, nil
}

func name(e *dwarf.Entry) string {
	n, _ := e.Val(dwarf.AttrName).(string)
	return n
}

type walker struct {
	d       *dwarf.Data
	out     Types
	seen    map[dwarf.Offset]bool
	visited map[visit]bool // each type once (per name it goes by): DWARF may loop
}

type visit struct {
	t     dwarf.Type
	alias string
}

// entry records the layouts an entry's type leads to; a struct or typedef
// entry stands for itself.
func (w *walker) entry(e *dwarf.Entry) error {
	off, ok := e.Val(dwarf.AttrType).(dwarf.Offset)
	switch e.Tag {
	case dwarf.TagStructType, dwarf.TagUnionType, dwarf.TagTypedef:
		off, ok = e.Offset, true
	}
	if !ok {
		return nil
	}
	return w.typeAt(off)
}

func (w *walker) typeAt(off dwarf.Offset) error {
	if w.seen[off] {
		return nil
	}
	w.seen[off] = true
	t, err := w.d.Type(off)
	if err != nil {
		return fmt.Errorf("read DWARF type at %#x: %w", off, err)
	}
	w.walk(t, "", 0)
	return nil
}

// maxDepth bounds the walk through nested types (damaged DWARF may loop).
const maxDepth = 64

func (w *walker) walk(t dwarf.Type, alias string, depth int) {
	if t == nil || depth > maxDepth || w.visited[visit{t, alias}] {
		return
	}
	w.visited[visit{t, alias}] = true
	switch t := t.(type) {
	case *dwarf.TypedefType:
		w.walk(t.Type, t.Name, depth+1)
	case *dwarf.QualType:
		w.walk(t.Type, alias, depth+1)
	case *dwarf.PtrType:
		w.walk(t.Type, "", depth+1)
	case *dwarf.ArrayType:
		w.walk(t.Type, "", depth+1)
	case *dwarf.FuncType:
		w.walk(t.ReturnType, "", depth+1)
		for _, p := range t.ParamType {
			w.walk(p, "", depth+1)
		}
	case *dwarf.StructType:
		if t.Incomplete {
			return
		}
		n := typeName(t, alias)
		if n == "" {
			return
		}
		if _, done := w.out[n]; done {
			return
		}
		lt := &Type{Name: n, Size: t.ByteSize}
		w.out[n] = lt
		for _, f := range t.Field {
			if f == nil {
				continue
			}
			lt.Members = append(lt.Members, Member{Name: f.Name, Offset: f.ByteOffset, Type: short(f.Type, 0),
				BitSize: f.BitSize, BitOffset: f.DataBitOffset + f.BitOffset})
			w.walk(f.Type, "", depth+1)
		}
	}
}

func typeName(t *dwarf.StructType, alias string) string {
	if t.StructName != "" {
		return t.Kind + " " + t.StructName
	}
	return alias
}

// short names a type without spelling out structs' members.
func short(t dwarf.Type, depth int) string {
	if t == nil {
		return "void"
	}
	if depth > 8 {
		return "..."
	}
	switch t := t.(type) {
	case *dwarf.StructType:
		if t.StructName != "" {
			return t.Kind + " " + t.StructName
		}
		return fmt.Sprintf("%s {%d bytes}", t.Kind, t.ByteSize)
	case *dwarf.PtrType:
		return short(t.Type, depth+1) + " *"
	case *dwarf.ArrayType:
		return fmt.Sprintf("%s[%d]", short(t.Type, depth+1), t.Count)
	case *dwarf.QualType:
		return t.Qual + " " + short(t.Type, depth+1)
	case *dwarf.TypedefType:
		return t.Name
	case *dwarf.FuncType:
		return "function"
	}
	if n := t.Common().Name; n != "" {
		return n
	}
	return fmt.Sprintf("%T", t)
}

// Change is a type whose layout differs between two builds.
type Change struct {
	Type     string
	PreSize  int64
	PostSize int64
	Fields   []string // what happened to which field: "+limit at 8", "-n", "n: offset 4 -> 8", "n: int -> long"
}

func (c Change) String() string {
	var b strings.Builder
	b.WriteString(c.Type)
	b.WriteString(": layout changed (")
	if c.PreSize != c.PostSize {
		fmt.Fprintf(&b, "size %d -> %d bytes", c.PreSize, c.PostSize)
		if len(c.Fields) > 0 {
			b.WriteString("; ")
		}
	}
	if len(c.Fields) > 0 {
		b.WriteString("fields: ")
		b.WriteString(strings.Join(c.Fields, ", "))
	}
	b.WriteString(")")
	return b.String()
}

// Compare returns the types of post whose layout differs from the same
// type in pre, sorted by name. Types only one side has are not changes.
func Compare(pre, post Types) []Change {
	var out []Change
	for n, b := range post {
		a, ok := pre[n]
		if !ok {
			continue
		}
		c := Change{Type: n, PreSize: a.Size, PostSize: b.Size}
		old := map[string]Member{}
		for _, m := range a.Members {
			old[m.Name] = m
		}
		for _, m := range b.Members {
			p, ok := old[m.Name]
			delete(old, m.Name)
			switch {
			case !ok:
				c.Fields = append(c.Fields, fmt.Sprintf("+%s at %d", fieldName(m.Name), m.Offset))
			case p.Offset != m.Offset || p.BitOffset != m.BitOffset:
				c.Fields = append(c.Fields, fmt.Sprintf("%s: offset %d -> %d", fieldName(m.Name), p.Offset, m.Offset))
			case p.Type != m.Type || p.BitSize != m.BitSize:
				c.Fields = append(c.Fields, fmt.Sprintf("%s: %s -> %s", fieldName(m.Name), p.Type, m.Type))
			}
		}
		var gone []string
		for n := range old {
			gone = append(gone, "-"+fieldName(n))
		}
		sort.Strings(gone)
		c.Fields = append(c.Fields, gone...)
		if c.PreSize != c.PostSize || len(c.Fields) > 0 {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}

func fieldName(n string) string {
	if n == "" {
		return "(anonymous)"
	}
	return n
}

// Normalize turns a type as an author writes it (in
// LIVESPLICE_LAYOUT_HANDLED) into the name Types uses: "struct  conn" and
// "struct conn" are the same.
func Normalize(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
