package deb

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const quiltPatch = `From: Someone
Subject: Fix a heap overflow (CVE-2022-25147)
 --- not a header: indented
Bug-Debian: https://bugs.debian.org/1

diff --git a/README b/README
index 1111111..2222222 100644
--- a/README
+++ b/README
@@ -1,2 +1,2 @@
-old
+new
 same
diff --git a/xml/apr_xml.c b/xml/apr_xml.c
index 3333333..4444444 100644
--- a/xml/apr_xml.c	2024-01-01 00:00:00
+++ b/xml/apr_xml.c	2024-01-02 00:00:00
@@ -10,3 +10,4 @@ static int f(void)
 {
-	return 1;
+	check();
+	return 2;
 }
-- 
2.39.2
`

// CodePart keeps the hunks of code files only, with -p1 headers and
// nothing of git's extended headers or the trailer.
func TestPatchCodePart(t *testing.T) {
	got := string(Patch{Name: "x.patch", Strip: 1, Text: []byte(quiltPatch)}.CodePart())
	want := "--- a/xml/apr_xml.c\n+++ b/xml/apr_xml.c\n@@ -10,3 +10,4 @@ static int f(void)\n {\n-\treturn 1;\n+\tcheck();\n+\treturn 2;\n }\n"
	if got != want {
		t.Fatalf("code part:\n%s\nwant:\n%s", got, want)
	}
	p0 := strings.NewReplacer("a/xml/", "xml/", "b/xml/", "xml/").Replace(quiltPatch)
	if got := string(Patch{Name: "x.patch", Strip: 0, Text: []byte(p0)}.CodePart()); got != want {
		t.Fatalf("code part of a -p0 patch:\n%s", got)
	}
	if got := (Patch{Name: "docs.patch", Strip: 1, Text: []byte("--- a/README\n+++ b/README\n@@ -1 +1 @@\n-a\n+b\n")}).CodePart(); len(got) != 0 {
		t.Fatalf("a patch of documentation has code: %q", got)
	}
}

// CVEs come from the patch's name and header and from the changelog
// items (of the entries newer than the installed version) naming it.
func TestPatchCVEs(t *testing.T) {
	changelog := `apr-util (1.6.3-1+deb12u1) bookworm-security; urgency=medium

  * Fix an overflow in the XML parser (CVE-2023-0001, CVE-2023-0002)
    [x.patch]
  * CVE-2023-0003: other thing (other.patch)

 -- Someone <a@b>  Mon, 1 Jan 2024 00:00:00 +0000

apr-util (1.6.3-1) unstable; urgency=medium

  * x.patch: CVE-2019-9999, an old one

 -- Someone <a@b>  Mon, 1 Jan 2023 00:00:00 +0000
`
	p := Patch{Name: "x.patch", Strip: 1, Text: []byte(quiltPatch)}
	got := strings.Join(p.CVEs([]byte(changelog), "1.6.3-1"), " ")
	if got != "CVE-2022-25147 CVE-2023-0001 CVE-2023-0002" {
		t.Fatalf("CVEs %q", got)
	}
	p = Patch{Name: "CVE-2025-46817.patch", Text: []byte("Description: x\n--- a/a.c\n+++ b/a.c\n")}
	if got := strings.Join(p.CVEs(nil, ""), " "); got != "CVE-2025-46817" {
		t.Fatalf("CVEs of a patch named by its CVE: %q", got)
	}
	// A patch named after one CVE of an item naming several (by the
	// patch's stem, not its file name) fixes that one, not the others.
	two := `redis (5:7.0.15-1~deb12u4) bookworm-security; urgency=medium

  * Fix two overflows (CVE-2025-46817, CVE-2025-46818)
  * lua-fix: CVE-2025-49844

 -- Someone <a@b>  Mon, 1 Jan 2024 00:00:00 +0000
`
	if got := strings.Join(p.CVEs([]byte(two), ""), " "); got != "CVE-2025-46817" {
		t.Fatalf("CVEs of a patch named by one CVE of an item naming two: %q", got)
	}
	// A patch whose name and header give none takes its item's.
	p = Patch{Name: "lua-fix.patch", Text: []byte("Description: x\n--- a/a.c\n+++ b/a.c\n")}
	if got := strings.Join(p.CVEs([]byte(two), ""), " "); got != "CVE-2025-49844" {
		t.Fatalf("CVEs of a patch named only in the changelog: %q", got)
	}
}

// NewPatches lists the series entries the newer tree adds or changes, in
// series order, with their -pN.
func TestNewPatches(t *testing.T) {
	dir := t.TempDir()
	oldT, newT := filepath.Join(dir, "old"), filepath.Join(dir, "new")
	write(t, filepath.Join(oldT, "debian/patches/series"), "a.patch\nb.patch\n")
	write(t, filepath.Join(oldT, "debian/patches/a.patch"), "a\n")
	write(t, filepath.Join(oldT, "debian/patches/b.patch"), "b\n")
	write(t, filepath.Join(newT, "debian/patches/series"), "# comment\na.patch\nb.patch\nd.patch -p0\nc.patch\n")
	write(t, filepath.Join(newT, "debian/patches/a.patch"), "a\n")
	write(t, filepath.Join(newT, "debian/patches/b.patch"), "b changed\n")
	write(t, filepath.Join(newT, "debian/patches/c.patch"), "c\n")
	write(t, filepath.Join(newT, "debian/patches/d.patch"), "d\n")
	ps, err := NewPatches(oldT, newT)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range ps {
		names = append(names, p.Name+"/"+string(rune('0'+p.Strip)))
	}
	if strings.Join(names, " ") != "b.patch/1 d.patch/0 c.patch/1" {
		t.Fatalf("new patches %v", names)
	}
	if err := os.RemoveAll(filepath.Join(oldT, "debian/patches")); err != nil {
		t.Fatal(err)
	}
	if ps, err := NewPatches(oldT, newT); err != nil || len(ps) != 4 {
		t.Fatalf("from a tree without patches: %d, %v", len(ps), err)
	}
}
