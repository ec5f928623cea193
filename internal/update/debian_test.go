package update

import "testing"

// The debian field (format version 2) round-trips, and bad CVE ids or a
// missing source are refused.
func TestDebianField(t *testing.T) {
	f := &File{ID: "x", Kind: KindProcess, Patch: "00", Debian: &Debian{Source: "lsdemo", From: "1.0-1", To: "1.0-3", Patch: "fix.patch", CVEs: []string{"CVE-2026-0001", "CVE-2024-123456"}}}
	data, err := Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	g, err := Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	if d := g.Debian; d == nil || d.Source != "lsdemo" || d.Patch != "fix.patch" || len(d.CVEs) != 2 || d.CVEs[1] != "CVE-2024-123456" {
		t.Fatalf("debian after a round trip: %+v", g.Debian)
	}
	for _, bad := range []*Debian{
		{Source: "lsdemo", From: "1", CVEs: []string{"CVE-26-1"}},
		{Source: "lsdemo", From: "1", CVEs: []string{"CVE-2026-001"}},
		{Source: "lsdemo", From: "1", CVEs: []string{"cve-2026-0001"}},
		{From: "1"},
	} {
		f.Debian = bad
		if _, err := Marshal(f); err == nil {
			t.Fatalf("debian %+v accepted", bad)
		}
	}
}
