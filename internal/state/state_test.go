package state

import (
	"errors"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	r := &Record{Updates: []Applied{{ID: "a", Targets: []string{"/bin/x"}, Regions: []Region{{Addr: 0x1000, Size: 0x2000, Text: 16}},
		Funcs: []Patched{{Name: "f", Addr: 0x500, New: 0x1000, Saved: []byte{1, 2, 3, 4, 5}, Jump: []byte{0xe9, 0, 0, 0, 0}}}}}}
	b, err := Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	n, err := DecodeHeader(b)
	if err != nil || n != len(b)-HeaderSize {
		t.Fatalf("header: %d %v", n, err)
	}
	got, err := DecodeBody(b[HeaderSize:])
	if err != nil || got.Updates[0].Funcs[0].Saved[4] != 5 {
		t.Fatalf("body: %+v %v", got, err)
	}
	if _, a := got.Find("a"); a == nil || got.Owner(0x1800) == nil || got.Owner(0x3000) != nil || got.Trampoline(0x500) == nil {
		t.Fatal("lookups")
	}
}

func TestRefusesDamage(t *testing.T) {
	if n, err := DecodeHeader(make([]byte, HeaderSize)); n != 0 || err != nil {
		t.Fatalf("empty record: %d %v", n, err)
	}
	h := make([]byte, HeaderSize)
	copy(h, "NOT-THE-MAGIC!!!")
	if _, err := DecodeHeader(h); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("bad magic: %v", err)
	}
	if _, err := DecodeBody([]byte("{bad")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("bad body: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	b, _ := Encode(&Record{Updates: []Applied{{ID: "x"}}})
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := DecodeHeader(data)
		if err != nil || n > len(data)-HeaderSize {
			return
		}
		DecodeBody(data[HeaderSize : HeaderSize+n])
	})
}
