package clobber

import (
	"debug/dwarf"
	"fmt"
)

// Sig is what the ABI makes of a function's prototype, from its DWARF.
type Sig struct {
	Returns Set  // the registers its return value may be in
	Stack   bool // some argument is passed on the stack
	Varargs bool // it takes a variable argument list
}

// Signature reads function name's prototype from the object's debug
// information. Where the classification is not plain it errs towards
// more return registers and towards stack arguments.
func (o *Object) Signature(name string) (Sig, error) {
	if o.dw == nil && o.dwErr == nil {
		if o.dw, o.dwErr = o.f.DWARF(); o.dwErr != nil {
			o.dwErr = fmt.Errorf("no debug information: %w", o.dwErr)
		}
	}
	if o.dwErr != nil {
		return Sig{}, o.dwErr
	}
	d := o.dw
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil {
			return Sig{}, err
		}
		if e == nil {
			return Sig{}, fmt.Errorf("no debug information for function %s", name)
		}
		if e.Tag != dwarf.TagSubprogram {
			continue
		}
		decl, ok := named(d, e, name)
		if !ok || e.Val(dwarf.AttrDeclaration) == true {
			if e.Children {
				r.SkipChildren()
			}
			continue
		}
		var s Sig
		ints, sses := 0, 0
		t, ok := e.Val(dwarf.AttrType).(dwarf.Offset)
		if !ok && decl != nil {
			// A member defined outside its class: the declaration has it.
			t, ok = decl.Val(dwarf.AttrType).(dwarf.Offset)
		}
		if ok {
			typ, err := d.Type(t)
			if err != nil {
				return Sig{}, err
			}
			c := classify(typ)
			switch {
			case c.memory:
				s.Returns = 1 << RAX // the caller's buffer, its address in rdi
				ints++
			default:
				for i := 0; i < c.ints; i++ {
					s.Returns |= 1 << []int{RAX, RDX}[i]
				}
				for i := 0; i < c.sses; i++ {
					s.Returns |= 1 << (X0 + i)
				}
			}
		}
		if !e.Children {
			return s, nil
		}
		for {
			c, err := r.Next()
			if err != nil {
				return Sig{}, err
			}
			if c == nil || c.Tag == 0 {
				break
			}
			switch c.Tag {
			case dwarf.TagUnspecifiedParameters:
				s.Varargs = true
			case dwarf.TagFormalParameter:
				t, ok := c.Val(dwarf.AttrType).(dwarf.Offset)
				if !ok {
					s.Stack = true
					break
				}
				typ, err := d.Type(t)
				if err != nil {
					return Sig{}, err
				}
				k := classify(typ)
				if k.memory {
					s.Stack = true
				}
				ints += k.ints
				sses += k.sses
			}
			if c.Children {
				r.SkipChildren()
			}
		}
		if ints > 6 || sses > 8 {
			s.Stack = true
		}
		return s, nil
	}
}

// named reports whether subprogram e is the function whose symbol is
// name: by its name (C), its linkage name (C++), or those of the
// declaration it completes (a C++ member defined outside its class), which
// it returns then.
func named(d *dwarf.Data, e *dwarf.Entry, name string) (*dwarf.Entry, bool) {
	var decl *dwarf.Entry
	for range 2 {
		if n, _ := e.Val(dwarf.AttrLinkageName).(string); n == name {
			return decl, true
		}
		if n, _ := e.Val(dwarf.AttrName).(string); n == name {
			return decl, true
		}
		spec, ok := e.Val(dwarf.AttrSpecification).(dwarf.Offset)
		if !ok {
			return nil, false
		}
		r := d.Reader()
		r.Seek(spec)
		if e, _ = r.Next(); e == nil {
			return nil, false
		}
		decl = e
	}
	return nil, false
}

// class is how a value is passed: in memory, or in so many general and
// vector registers. For a small struct or union it counts each eightbyte
// as both (either may be its class), which only errs towards the stack.
type class struct {
	memory     bool
	ints, sses int
}

func classify(t dwarf.Type) class {
	for {
		switch q := t.(type) {
		case *dwarf.TypedefType:
			t = q.Type
			continue
		case *dwarf.QualType:
			t = q.Type
			continue
		}
		break
	}
	size := t.Size()
	switch q := t.(type) {
	case *dwarf.FloatType:
		if size <= 8 {
			return class{sses: 1}
		}
		return class{memory: true} // long double (x87), _Float128: conservatively
	case *dwarf.ComplexType:
		if size <= 16 {
			return class{sses: 2}
		}
		return class{memory: true}
	case *dwarf.StructType:
		if size > 16 || size < 0 {
			return class{memory: true}
		}
		n := int(size+7) / 8
		return class{ints: n, sses: n}
	case *dwarf.PtrType, *dwarf.IntType, *dwarf.UintType, *dwarf.CharType, *dwarf.UcharType,
		*dwarf.BoolType, *dwarf.EnumType, *dwarf.AddrType:
		if size > 8 {
			return class{ints: 2}
		}
		return class{ints: 1}
	case *dwarf.VoidType:
		return class{}
	case *dwarf.ArrayType, *dwarf.FuncType, *dwarf.UnspecifiedType:
		_ = q
		return class{memory: true}
	}
	return class{memory: true}
}
