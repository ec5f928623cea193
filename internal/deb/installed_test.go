package deb

import (
	"strings"
	"testing"
)

// pickVersion targets the binary packages at the chosen version and lists
// the others as skipped; it refuses only when no shipped file is at it.
func TestPickVersion(t *testing.T) {
	// libxml2 upgraded, libxml2-utils and libxml2-dev not: the case.
	bins := []Binary{
		{"libxml2:amd64", "2.9.14+dfsg-1.3~deb12u6"},
		{"libxml2-dev:amd64", "2.9.14+dfsg-1.3~deb12u4"},
		{"libxml2-utils", "2.9.14+dfsg-1.3~deb12u4"},
	}
	ships := map[string][]string{
		"libxml2:amd64": {"/usr/lib/x86_64-linux-gnu/libxml2.so.2.9.14"},
		"libxml2-utils": {"/usr/bin/xmllint"},
	}
	calls := 0
	files := func(pkgs []string) ([]string, error) {
		calls++
		var out []string
		for _, p := range pkgs {
			out = append(out, ships[p]...)
		}
		return out, nil
	}
	inst, err := pickVersion("libxml2", bins, "2.9.14+dfsg-1.3~deb12u6", files)
	if err != nil {
		t.Fatal(err)
	}
	if inst.Version != "2.9.14+dfsg-1.3~deb12u6" || strings.Join(inst.Pkgs, " ") != "libxml2:amd64" ||
		strings.Join(inst.Files, " ") != ships["libxml2:amd64"][0] || len(inst.Skipped) != 2 ||
		inst.Skipped[0] != bins[1] || inst.Skipped[1] != bins[2] {
		t.Fatalf("--version deb12u6: %+v", inst)
	}
	inst, err = pickVersion("libxml2", bins, "2.9.14+dfsg-1.3~deb12u4", files)
	if err != nil || strings.Join(inst.Files, " ") != "/usr/bin/xmllint" || len(inst.Skipped) != 1 {
		t.Fatalf("--version deb12u4: %+v %v", inst, err)
	}
	// No --version and both versions ship code: say which to give.
	if _, err := pickVersion("libxml2", bins, "", files); err == nil || !strings.Contains(err.Error(), "--version") {
		t.Fatalf("no --version, two versions shipping code: %v", err)
	}
	// No --version, only one version ships code (a -dev package lags).
	// Each version's files are listed once (dpkg -L is slow).
	delete(ships, "libxml2-utils")
	calls = 0
	inst, err = pickVersion("libxml2", bins, "", files)
	if err != nil || inst.Version != "2.9.14+dfsg-1.3~deb12u6" || len(inst.Skipped) != 2 ||
		strings.Join(inst.Files, " ") != ships["libxml2:amd64"][0] {
		t.Fatalf("no --version, one version ships code: %+v %v", inst, err)
	}
	if calls != 2 {
		t.Fatalf("no --version, two versions: files listed %d times, want 2 (once per version)", calls)
	}
	// At --version only packages without code: refused, naming them.
	if _, err := pickVersion("libxml2", bins, "2.9.14+dfsg-1.3~deb12u4", files); err == nil || !strings.Contains(err.Error(), "ship no ELF file") {
		t.Fatalf("--version of packages without code: %v", err)
	}
	// A version nothing is installed at.
	if _, err := pickVersion("libxml2", bins, "2.9.14+dfsg-1.3~deb12u9", files); err == nil || !strings.Contains(err.Error(), "deb12u4 (libxml2-dev:amd64, libxml2-utils)") {
		t.Fatalf("--version not installed: %v", err)
	}
	if _, err := pickVersion("libxml2", nil, "", files); err == nil {
		t.Fatal("nothing installed: no error")
	}
}
