package state

import (
	"encoding/binary"
	"errors"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	r := &Record{Updates: []Applied{{ID: "a", Targets: []string{"/bin/x"}, Regions: []Region{{Addr: 0x1000, Size: 0x2000, Text: 16}},
		Funcs: []Patched{{Name: "f", Addr: 0x500, New: 0x1000, Saved: []byte{1, 2, 3, 4, 5}, Jump: []byte{0xe9, 0, 0, 0, 0}}}}}}
	h, b, err := Encode(r, 1)
	if err != nil {
		t.Fatal(err)
	}
	off, n, err := DecodeHeader(h)
	if err != nil || n != len(b) || off != SlotOffset(1) || Slot(off) != 1 {
		t.Fatalf("header: %d %d %v", off, n, err)
	}
	got, err := DecodeBody(b)
	if err != nil || got.Updates[0].Funcs[0].Saved[4] != 5 {
		t.Fatalf("body: %+v %v", got, err)
	}
	if _, a := got.Find("a"); a == nil || got.Owner(0x1800) == nil || got.Owner(0x3000) != nil || got.Trampoline(0x500) == nil {
		t.Fatal("lookups")
	}
}

func TestRefusesDamage(t *testing.T) {
	if _, n, err := DecodeHeader(make([]byte, HeaderSize)); n != 0 || err != nil {
		t.Fatalf("empty record: %d %v", n, err)
	}
	h := make([]byte, HeaderSize)
	copy(h, "NOT-THE-MAGIC!!!")
	if _, _, err := DecodeHeader(h); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("bad magic: %v", err)
	}
	good, _, _ := Encode(&Record{}, 0)
	good[24] = 7 // body offset outside both slots
	if _, _, err := DecodeHeader(good); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("bad magic: %v", err)
	}
	if _, err := DecodeBody([]byte("{bad")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("bad body: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	h, b, _ := Encode(&Record{Updates: []Applied{{ID: "x"}}}, 0)
	f.Add(h, b)
	f.Fuzz(func(t *testing.T, h, body []byte) {
		if _, n, err := DecodeHeader(h); err == nil && n <= len(body) {
			DecodeBody(body[:n])
		}
	})
}

// A static defined by one update in two objects (a library and the one
// split from it, built from one file) is found in each object's own region.
func TestDefinedIn(t *testing.T) {
	r := &Record{Updates: []Applied{{
		ID: "u", Targets: []string{"/lib/a.so", "/lib/b.so"},
		Regions: []Region{{Addr: 0x1000, Size: 0x1000}, {Addr: 0x8000, Size: 0x1000}},
		Defs: []Def{{Name: "scale", File: "c.c", Addr: 0x1100, Func: true}, {Name: "scale", File: "c.c", Addr: 0x8100, Func: true},
			{Name: "g", Addr: 0x8200}},
	}}}
	if d := r.DefinedIn("/lib/a.so", "c.c", "scale"); len(d) != 1 || d[0].Addr != 0x1100 {
		t.Errorf("a.so: %+v", d)
	}
	if d := r.DefinedIn("/lib/b.so", "c.c", "scale"); len(d) != 1 || d[0].Addr != 0x8100 {
		t.Errorf("b.so: %+v", d)
	}
	if d := r.DefinedIn("/lib/c.so", "c.c", "scale"); len(d) != 0 {
		t.Errorf("c.so: %+v", d)
	}
	if d := r.Defined("c.c", "scale"); len(d) != 2 {
		t.Errorf("Defined: %+v", d)
	}
	// A target without its region (no record is written so) finds
	// nothing there, and a region still finds its own.
	r.Updates[0].Regions = r.Updates[0].Regions[:1]
	if d := r.DefinedIn("/lib/b.so", "c.c", "scale"); len(d) != 0 {
		t.Errorf("b.so without its region: %+v", d)
	}
	if d := r.DefinedIn("/lib/a.so", "c.c", "scale"); len(d) != 1 || d[0].Addr != 0x1100 {
		t.Errorf("a.so, b.so without its region: %+v", d)
	}
}

// An entry jump's bytes start Lead before the entry: a redirect through
// padding overlaps what lies before its function, not what follows.
func TestPatchedOverlaps(t *testing.T) {
	p := Patched{Addr: 0x1010, Lead: 8, Jump: make([]byte, 5)} // writes 0x1008..0x100d
	for _, c := range []struct {
		lo, hi uint64
		want   bool
	}{{0x1000, 0x1008, false}, {0x1000, 0x1009, true}, {0x100c, 0x1011, true}, {0x100d, 0x1012, false}, {0x1010, 0x1015, false}} {
		if got := p.Overlaps(c.lo, c.hi); got != c.want {
			t.Errorf("Overlaps(%#x, %#x) = %v, want %v", c.lo, c.hi, got, c.want)
		}
	}
	r := &Record{Updates: []Applied{{ID: "u", Funcs: []Patched{p}}}}
	if q := r.Overlapping(0x100c, 0x1011); q == nil || q.Addr != 0x1010 {
		t.Errorf("Overlapping: %+v", q)
	}
	if q := r.Overlapping(0x1010, 0x1015); q != nil {
		t.Errorf("Overlapping past the jump: %+v", q)
	}
}

// A record is written as version 2 only when a redirect in it has a lead:
// a livesplice that knows only version 1 must refuse exactly those.
func TestVersionOnlyWithLead(t *testing.T) {
	f := Patched{Name: "f", Addr: 0x500, Saved: []byte{1, 2, 3, 4, 5}, Jump: []byte{0xe9, 0, 0, 0, 0}}
	for _, c := range []struct {
		rec  *Record
		want uint32
	}{
		{&Record{}, Version},
		{&Record{Updates: []Applied{{ID: "a", Funcs: []Patched{f}}}}, Version},
		{&Record{Updates: []Applied{{ID: "a", Funcs: []Patched{f}}, {ID: "b", Funcs: []Patched{f, {Name: "g", Addr: 0x600, Lead: 5}}}}}, VersionLead},
	} {
		h, _, err := Encode(c.rec, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := binary.LittleEndian.Uint32(h[16:]); got != c.want {
			t.Errorf("%d updates: version %d, want %d", len(c.rec.Updates), got, c.want)
		}
		if _, _, err := DecodeHeader(h); err != nil {
			t.Errorf("version %d: %v", c.want, err)
		}
	}
}
