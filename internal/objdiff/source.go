package objdiff

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// SetTrees gives the roots of the pre and post source trees the objects
// were built from, so that the reasons can say which functions' source
// lines changed (from the DWARF declarations and a line diff of the two
// trees' files). Without them the reasons come from the code alone.
func (b *Builder) SetTrees(pre, post string) {
	b.preRoot, b.postRoot = pre, post
	b.touchedFiles = map[string]*touched{}
}

// touched is the post lines of one source file that the patch changed.
type touched struct {
	rel   string
	lines []int    // post line numbers: added or changed lines, and where lines were removed
	hunks [][4]int // old start, old count, new start, new count
}

// newLine maps an unchanged pre line to its post line number.
func (t *touched) newLine(old int) (int, bool) {
	shift := 0
	for _, h := range t.hunks {
		oldStart, oldN, newN := h[0], h[1], h[3]
		if oldN == 0 {
			oldStart++ // lines added after oldStart
		}
		switch {
		case old >= oldStart+oldN:
			shift += newN - oldN
		case old >= oldStart:
			return 0, false // a changed line
		}
	}
	return old + shift, true
}

var hunk = regexp.MustCompile(`^@@ -([0-9]+)(?:,([0-9]+))? \+([0-9]+)(?:,([0-9]+))? @@`)

// touchedLines finds file (a DWARF path) in the trees and returns the post
// lines that differ from the pre file (nil if it did not change or is not
// in the trees).
func (b *Builder) touchedLines(file string) *touched {
	if b.postRoot == "" || file == "" {
		return nil
	}
	if t, ok := b.touchedFiles[file]; ok {
		return t
	}
	b.touchedFiles[file] = nil
	parts := strings.Split(filepath.ToSlash(filepath.Clean(file)), "/")
	for i := range parts {
		rel := strings.Join(parts[i:], "/")
		if rel == "" {
			continue
		}
		post, pre := filepath.Join(b.postRoot, rel), filepath.Join(b.preRoot, rel)
		if st, err := os.Stat(post); err != nil || !st.Mode().IsRegular() {
			continue
		}
		if _, err := os.Stat(pre); err != nil {
			pre = os.DevNull // a new file: every line is new
		}
		out, err := diffU0(pre, post)
		if err != nil {
			// The reasons of this file's functions come from the code
			// alone: say so (SourceErr) rather than claim no line changed.
			if b.sourceErr == nil {
				b.sourceErr = err
			}
			return nil
		}
		t := &touched{rel: rel}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			m := hunk.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			oldStart, _ := strconv.Atoi(m[1])
			oldN := 1
			if m[2] != "" {
				oldN, _ = strconv.Atoi(m[2])
			}
			start, _ := strconv.Atoi(m[3])
			n := 1
			if m[4] != "" {
				n, _ = strconv.Atoi(m[4])
			}
			t.hunks = append(t.hunks, [4]int{oldStart, oldN, start, n})
			if n == 0 { // lines removed after post line start
				t.lines = append(t.lines, start, start+1)
			}
			for l := start; l < start+n; l++ {
				t.lines = append(t.lines, l)
			}
		}
		if len(t.lines) > 0 {
			b.touchedFiles[file] = t
		}
		return b.touchedFiles[file]
	}
	return nil
}

// diffU0 is `diff -U0 pre post`: nil if the files are the same, an
// error if diff could not tell (missing, exit status 2).
func diffU0(pre, post string) ([]byte, error) {
	cmd := exec.Command("diff", "-U0", pre, post)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		return out, nil // the files differ
	}
	if err != nil {
		return nil, fmt.Errorf("diff -U0 %s %s: %v: %s", pre, post, err, strings.TrimSpace(stderr.String()))
	}
	return nil, nil
}

// SourceErr is the first failure to diff a source file of the trees
// (SetTrees): the reasons of that file's functions then came from the
// code alone. Nil if every diff worked.
func (b *Builder) SourceErr() error { return b.sourceErr }

// sourceChanged reports where the patch changed function n's source lines
// (its extent in the post object's DWARF), as FILE:LINE.
func (d *differ) sourceChanged(n string) (string, bool) {
	di := d.post.dwarf()
	if di == nil || d.b.postRoot == "" {
		return "", false
	}
	file, from, to, ok := di.extent(n)
	if !ok {
		return "", false
	}
	t := d.b.touchedLines(file)
	if t == nil {
		return "", false
	}
	for _, l := range t.lines {
		if l >= from && l <= to {
			return fmt.Sprintf("%s:%d", t.rel, l), true
		}
	}
	return "", false
}

// linesMoved reports whether the only difference between pre and post
// function sections a and b is 32-bit immediates holding a line number of
// file that moved with the lines inserted or removed above it (__LINE__ in
// an error or logging macro).
func (d *differ) linesMoved(a, b *section, file string) bool {
	t := d.b.touchedLines(file)
	if t == nil || a.size != b.size || len(a.relocs) != len(b.relocs) {
		return false
	}
	ma, mb := a.masked(), b.masked()
	if len(ma) != len(mb) {
		return false
	}
	covered := make([]bool, len(ma))
	found := false
	for i := range ma {
		if ma[i] == mb[i] || covered[i] {
			continue
		}
		ok := false
		for st := max(i-3, 0); st <= i && st+4 <= len(ma); st++ {
			v := int(uint32(ma[st]) | uint32(ma[st+1])<<8 | uint32(ma[st+2])<<16 | uint32(ma[st+3])<<24)
			w := int(uint32(mb[st]) | uint32(mb[st+1])<<8 | uint32(mb[st+2])<<16 | uint32(mb[st+3])<<24)
			if n, moved := t.newLine(v); moved && v > 0 && n == w && v != w {
				for k := st; k < st+4; k++ {
					covered[k] = true
				}
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
		found = true
	}
	if !found {
		return false
	}
	for i := range a.relocs {
		ra, rb := a.relocs[i], b.relocs[i]
		if ra.off != rb.off || ra.typ != rb.typ {
			return false
		}
		if ta, tb := d.pre.resolve(ra), d.post.resolve(rb); !d.sameTarget(ta, tb) && !(ta.dat && tb.dat) {
			return false
		}
	}
	return true
}
