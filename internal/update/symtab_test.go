package update

import "testing"

// A recovered symbol table round-trips, and one without build-id or with
// a nameless symbol is refused.
func TestSymtab(t *testing.T) {
	f := sample()
	f.Targets[0].Symtab = &Symtab{BuildID: "ab12", Symbols: []SymtabSym{
		{Name: "helper", File: "a.c", Addr: 0x1130, Size: 12, Func: true},
		{Name: "api", Addr: 0x1140, Size: 30, Func: true, Global: true},
	}}
	data, err := Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	g, err := Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	if st := g.Targets[0].Symtab; st == nil || st.BuildID != "ab12" || len(st.Symbols) != 2 || st.Symbols[0] != f.Targets[0].Symtab.Symbols[0] {
		t.Fatalf("symtab after a round trip: %+v", st)
	}
	f.Targets[0].Symtab.BuildID = ""
	if _, err := Marshal(f); err == nil {
		t.Fatal("symtab without build-id accepted")
	}
	f.Targets[0].Symtab = &Symtab{BuildID: "ab12", Symbols: []SymtabSym{{Addr: 1}}}
	if _, err := Marshal(f); err == nil {
		t.Fatal("nameless recovered symbol accepted")
	}
}
