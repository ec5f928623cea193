package main

import (
	"strings"
	"testing"
)

// create --split's lines (internal/cli deb.go) read back into fixes.
func TestSplitReport(t *testing.T) {
	out := `checking build dependencies...
made /x/u/redis-a.lsu: debian/patches/CVE-2026-23631.patch (CVE-2026-23631)
made /x/u/redis-b.lsu: debian/patches/CVE-2026-25243.patch (CVE-2026-25243 CVE-2026-1), requires redis-a
not made: debian/patches/CVE-2026-92925.patch (CVE-2026-92925): cluster.c: .data: new code refers to anonymous data
nothing to do: debian/patches/doc.patch: changes no code of an installed file
not made: debian/patches/nocve.patch: struct layout changed
not made: code changes no added patch makes: x.c
`
	got := splitReport(out)
	want := []fix{
		{Patch: "CVE-2026-23631.patch", CVEs: []string{"CVE-2026-23631"}, Made: true, File: "/x/u/redis-a.lsu", ID: "redis-a"},
		{Patch: "CVE-2026-25243.patch", CVEs: []string{"CVE-2026-25243", "CVE-2026-1"}, Made: true, File: "/x/u/redis-b.lsu", ID: "redis-b"},
		{Patch: "CVE-2026-92925.patch", CVEs: []string{"CVE-2026-92925"}, Reason: "cluster.c: .data: new code refers to anonymous data"},
		{Patch: "doc.patch", Reason: "changes no code of an installed file", Nothing: true},
		{Patch: "nocve.patch", Reason: "struct layout changed"},
		{Patch: "(rest)", Reason: "code changes no added patch makes: x.c"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d fixes, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Patch != w.Patch || strings.Join(g.CVEs, ",") != strings.Join(w.CVEs, ",") || g.Made != w.Made ||
			g.File != w.File || g.ID != w.ID || g.Reason != w.Reason || g.Nothing != w.Nothing {
			t.Errorf("fix %d: got %+v, want %+v", i, g, w)
		}
	}
	md := markdown([]result{{row: row{Src: "redis", Old: "1", New: "2"}, Fixes: got}})
	if !strings.Contains(md, "| redis | 1 -> 2 | 5 | 1 | 2 | 0 | 0 |") {
		t.Errorf("summary row wrong:\n%s", md)
	}
}
