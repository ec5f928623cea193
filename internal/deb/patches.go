package deb

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Patch is an entry of debian/patches/series.
type Patch struct {
	Name  string // its name in the series
	Strip int    // its -pN (default 1)
	Text  []byte
}

// NewPatches returns the patches of newTree's series that oldTree's
// series lacks, or has with other contents, in series order: what a
// newer Debian version adds (create --deb --split).
func NewPatches(oldTree, newTree string) ([]Patch, error) {
	old, err := readSeries(oldTree)
	if err != nil {
		return nil, err
	}
	had := map[string][]byte{}
	for _, p := range old {
		had[p.Name] = p.Text
	}
	cur, err := readSeries(newTree)
	if err != nil {
		return nil, err
	}
	var out []Patch
	for _, p := range cur {
		if t, ok := had[p.Name]; ok && bytes.Equal(t, p.Text) {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// readSeries reads a tree's debian/patches/series and its patches; a tree
// without one has none.
func readSeries(tree string) ([]Patch, error) {
	dir := filepath.Join(tree, "debian", "patches")
	data, err := os.ReadFile(filepath.Join(dir, "series"))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Patch
	for _, line := range strings.Split(string(data), "\n") {
		line, _, _ = strings.Cut(line, "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		p := Patch{Name: f[0], Strip: 1}
		for _, opt := range f[1:] {
			if n, ok := strings.CutPrefix(opt, "-p"); ok {
				if p.Strip, err = strconv.Atoi(n); err != nil || p.Strip < 0 {
					return nil, fmt.Errorf("debian/patches/series of %s: %s: bad option %s", tree, p.Name, opt)
				}
			}
		}
		if p.Text, err = os.ReadFile(filepath.Join(dir, p.Name)); err != nil {
			return nil, fmt.Errorf("debian/patches/series of %s: %w", tree, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// CodePart returns the hunks of the patch that change code files (IsCode),
// with their headers rewritten to strip level 1 (--- a/F, +++ b/F) for
// patch -p1; everything else (its description, other files, git's
// extended headers) is left out. Empty when the patch changes no code.
func (p Patch) CodePart() []byte {
	lines := strings.SplitAfter(string(p.Text), "\n")
	var out strings.Builder
	for i := 0; i+1 < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "--- ") || !strings.HasPrefix(lines[i+1], "+++ ") {
			continue
		}
		from, to := headerPath(lines[i][4:], p.Strip), headerPath(lines[i+1][4:], p.Strip)
		name := to
		if name == "" {
			name = from
		}
		i += 2
		var hunks strings.Builder
		for i < len(lines) && strings.HasPrefix(lines[i], "@@ ") {
			oldN, newN, ok := hunkCounts(lines[i])
			if !ok {
				break
			}
			hunks.WriteString(lines[i])
			i++
			for i < len(lines) && (oldN > 0 || newN > 0 || strings.HasPrefix(lines[i], "\\")) {
				l := lines[i]
				switch {
				case strings.HasPrefix(l, "\\"):
				case strings.HasPrefix(l, "-"):
					oldN--
				case strings.HasPrefix(l, "+"):
					newN--
				default: // context; an empty line is a context line some tools shorten
					oldN--
					newN--
				}
				hunks.WriteString(l)
				i++
			}
		}
		i-- // the loop's i++ looks at the line after the hunks
		if name == "" || !IsCode(name) || hunks.Len() == 0 {
			continue
		}
		label := func(prefix, path string) string {
			if path == "" {
				return "/dev/null\n"
			}
			return prefix + path + "\n"
		}
		out.WriteString("--- " + label("a/", from))
		out.WriteString("+++ " + label("b/", to))
		out.WriteString(hunks.String())
	}
	return []byte(out.String())
}

// headerPath is the file a ---/+++ header names, strip leading components
// removed; "" for /dev/null.
func headerPath(s string, strip int) string {
	s = strings.TrimRight(s, "\r\n")
	if i := strings.IndexByte(s, '\t'); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimSpace(s)
	if s == "/dev/null" || s == "" {
		return ""
	}
	parts := strings.Split(s, "/")
	if strip >= len(parts) {
		return ""
	}
	return strings.Join(parts[strip:], "/")
}

var hunkRE = regexp.MustCompile(`^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@`)

// hunkCounts reads a hunk header's old and new line counts.
func hunkCounts(l string) (oldN, newN int, ok bool) {
	m := hunkRE.FindStringSubmatch(l)
	if m == nil {
		return 0, 0, false
	}
	oldN, newN = 1, 1
	if m[1] != "" {
		oldN, _ = strconv.Atoi(m[1])
	}
	if m[2] != "" {
		newN, _ = strconv.Atoi(m[2])
	}
	return oldN, newN, true
}

var cveRE = regexp.MustCompile(`CVE-\d{4}-\d{4,}`)

// CVEs returns the CVE ids (sorted, once each) that the patch's name and
// header (its text before the first file) name, and those of the items of
// debian/changelog entries newer than version from that name the patch:
// by its file name always, by its stem only when the name and header give
// none (a patch named after one CVE of an item listing several fixes that
// one, not all of the item's).
func (p Patch) CVEs(changelog []byte, from string) []string {
	set := map[string]bool{}
	add := func(s string) {
		for _, c := range cveRE.FindAllString(s, -1) {
			set[c] = true
		}
	}
	add(p.Name)
	head := string(p.Text)
	if i := strings.Index(head, "\n--- "); i >= 0 {
		head = head[:i]
	}
	add(head)
	own := len(set) > 0
	stem := strings.TrimSuffix(strings.TrimSuffix(p.Name, ".patch"), ".diff")
	for _, item := range changelogItems(changelog, from) {
		if strings.Contains(item, p.Name) || !own && strings.Contains(item, stem) {
			add(item)
		}
	}
	out := make([]string, 0, len(set))
	for c := range set {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

var entryRE = regexp.MustCompile(`^\S+ \(([^)]+)\)`)

// changelogItems splits the entries of a Debian changelog before the one
// of version from into their items ("  * ...", "    - ...", with their
// continuation lines).
func changelogItems(changelog []byte, from string) []string {
	var items []string
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			items = append(items, cur.String())
			cur.Reset()
		}
	}
	for _, l := range strings.Split(string(changelog), "\n") {
		if m := entryRE.FindStringSubmatch(l); m != nil {
			flush()
			if m[1] == from {
				break
			}
			continue
		}
		t := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(t, "* "), strings.HasPrefix(t, "- "), strings.HasPrefix(t, "+ "), t == "", strings.HasPrefix(l, " -- "):
			flush()
			if t != "" && !strings.HasPrefix(l, " -- ") {
				cur.WriteString(t + "\n")
			}
		default:
			cur.WriteString(t + "\n")
		}
	}
	flush()
	return items
}
