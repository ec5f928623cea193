package deb

import (
	"fmt"
	"path/filepath"
	"sort"

	"livesplice/internal/repo"
)

// Matching shipped files to build outputs by what they are, not by name:
// Debian's install step may ship a linked file under another name (redis
// ships src/redis-server as /usr/bin/redis-check-rdb, /usr/bin/redis-server
// a symlink to it), and a build may link several files of one name (squid's
// helpers). The rules, in order: the output with the shipped file's GNU
// build-id (stripping keeps it), else the output whose allocated sections
// (code, read-only data, data; the build-id note aside) are the shipped
// file's, else the one output of the shipped file's name (the build's
// code differs from Debian's, e.g. another toolchain: only run-pre
// matching can then tell whether a function is the same).

// Match is the build output a shipped file is, and how that was found.
type Match struct {
	Output string // the output's path relative to the tree's root
	By     string // "build-id", "code" or "name"
}

// MatchOutputs pairs each shipped file with the linked output of the
// build in root (outputs: paths relative to root) that it is; a shipped
// file no output matches is in unmatched with the reason.
func MatchOutputs(root string, outputs, shipped []string) (matched map[string]Match, unmatched map[string]string, err error) {
	outs := append([]string(nil), outputs...)
	sort.Strings(outs)
	ids := map[string][]string{}
	for _, o := range outs {
		id, _, err := repo.BuildID(filepath.Join(root, o))
		if err != nil {
			return nil, nil, fmt.Errorf("build output %s: %w", o, err)
		}
		if id != "" {
			ids[id] = append(ids[id], o)
		}
	}
	matched, unmatched = map[string]Match{}, map[string]string{}
	for _, s := range shipped {
		id, _, err := repo.BuildID(s)
		if err != nil {
			return nil, nil, fmt.Errorf("shipped file %s: %w", s, err)
		}
		// Outputs with one build-id are the same file (a copy the build
		// made): any one of them is it.
		if c := ids[id]; id != "" && len(c) > 0 {
			matched[s] = Match{Output: c[0], By: "build-id"}
			continue
		}
		var same, named []string
		for _, o := range outs {
			if sameCode(s, filepath.Join(root, o)) == nil {
				same = append(same, o)
			}
			if filepath.Base(o) == filepath.Base(s) {
				named = append(named, o)
			}
		}
		switch {
		case len(same) > 0:
			matched[s] = Match{Output: same[0], By: "code"}
		case len(named) == 1:
			matched[s] = Match{Output: named[0], By: "name"}
		case len(named) > 1:
			unmatched[s] = fmt.Sprintf("no file the build linked has its build-id or its code, and %d have its name (%v): cannot tell which one it is", len(named), named)
		default:
			unmatched[s] = "no file the build linked has its build-id, its code or its name (built outside debian/rules build-arch, or by another compiler?)"
		}
	}
	return matched, unmatched, nil
}
