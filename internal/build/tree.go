package build

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
)

// readTree builds a Tree from the wrapper's log of a build in root. It also
// returns how many compiles the log holds, so that Run can tell a build that
// bypassed the wrapper.
func readTree(root, logPath string) (*Tree, int, error) {
	recs, err := readLog(logPath)
	if err != nil {
		return nil, 0, err
	}
	t := &Tree{Root: root}
	// Later records win: a file built twice is described by its last build.
	objects := map[string]Object{}
	units := map[string]unit{}    // compiles, by object
	inline := map[string][]unit{} // sources compiled and linked in one, by output
	links := map[string]record{}
	compiles := 0
	for _, r := range recs {
		switch r.Kind {
		case "compile":
			compiles++
			if len(r.Sources) == 1 && addObject(t, objects, r.Output, r.Sources[0]) {
				rel, _ := t.rel(r.Output)
				units[rel] = unit{obj: r.Output, source: r.Sources[0], cwd: r.Cwd, args: r.Args, compiler: r.Compiler, env: r.Env}
			}
		case "link":
			if len(r.Sources) > 0 {
				compiles++
			}
			kept := map[string]string{}
			for _, k := range r.Kept {
				if addObject(t, objects, k.Object, k.Source) {
					kept[k.Source] = k.Object
				}
			}
			if rel, ok := t.rel(r.Output); ok {
				links[rel] = r
				inline[rel] = inlineUnits(t, r, rel, kept)
			}
		}
	}
	for _, o := range objects {
		t.Objects = append(t.Objects, o)
	}
	sort.Slice(t.Objects, func(i, j int) bool { return t.Objects[i].Rel < t.Objects[j].Rel })
	for _, o := range t.Objects {
		if u, ok := units[o.Rel]; ok {
			t.units = append(t.units, u)
		}
	}

	am := &archiveMapper{t: t, cache: map[string][]byte{}}
	for rel, l := range links {
		if !isLinkedELF(filepath.Join(root, filepath.FromSlash(rel))) {
			continue
		}
		out := Output{Rel: rel, Shared: l.Shared}
		set := map[string]bool{}
		for _, o := range l.Objects {
			if r, ok := t.rel(o); ok && isFile(o) {
				set[r] = true
			}
		}
		for _, a := range l.Archives {
			members, err := am.members(a)
			if err != nil {
				return nil, 0, fmt.Errorf("archive %s linked into %s: %w", a, rel, err)
			}
			for _, m := range members {
				set[m] = true
			}
		}
		for o := range set {
			out.Objects = append(out.Objects, o)
		}
		sort.Strings(out.Objects)
		t.Outputs = append(t.Outputs, out)
		t.units = append(t.units, inline[rel]...)
	}
	sort.Slice(t.Outputs, func(i, j int) bool { return t.Outputs[i].Rel < t.Outputs[j].Rel })
	return t, compiles, nil
}

func readLog(logPath string) ([]record, error) {
	f, err := os.Open(logPath)
	if errors.Is(err, fs.ErrNotExist) {
		// Nothing went through the wrapper; Run reports that.
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var recs []record
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for n := 1; sc.Scan(); n++ {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", logPath, n, err)
		}
		recs = append(recs, r)
	}
	return recs, sc.Err()
}

// rel makes an absolute path relative to the tree root, with forward
// slashes; ok is false for paths outside the tree.
func (t *Tree) rel(p string) (string, bool) {
	if !inside(t.Root, p) {
		return "", false
	}
	r, err := filepath.Rel(t.Root, p)
	if err != nil {
		return "", false
	}
	return filepath.ToSlash(r), true
}

// addObject records an object if it still exists inside the tree; objects
// written elsewhere (/dev/null, /tmp) or deleted by the build are not part
// of it.
func addObject(t *Tree, objects map[string]Object, obj, src string) bool {
	rel, ok := t.rel(obj)
	if !ok || !isFile(obj) {
		return false
	}
	s, ok := t.rel(src)
	if !ok {
		s = filepath.ToSlash(src)
	}
	objects[rel] = Object{Rel: rel, Source: s}
	return true
}

// inlineUnits are the units of a compile-and-link record: one per source,
// whose object is the one gcc kept (a wrapped build) or, in a plain build,
// the name gcc would have kept it under, which Recompile makes. Sources
// with the same stem, or whose object name would lie outside the tree or
// is a file already there, get no object name (Recompile refuses them).
func inlineUnits(t *Tree, r record, rel string, kept map[string]string) []unit {
	if len(r.Sources) == 0 {
		return nil
	}
	inv := parseArgs(r.Args)
	var us []unit
	for _, s := range r.Sources {
		u := unit{source: s, cwd: r.Cwd, args: r.Args, compiler: r.Compiler, env: r.Env, link: rel}
		switch k, ok := kept[s]; {
		case ok:
			u.obj = k
		case inv.uniqueStems():
			obj := absIn(r.Cwd, inv.dumpPrefix()+stem(s)+".o")
			if _, err := os.Lstat(obj); inside(t.Root, obj) && err != nil {
				u.obj = obj
			}
		}
		us = append(us, u)
	}
	return us
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// isLinkedELF reports whether p is an ELF executable or shared library, as
// opposed to a missing file or the result of a relocatable link (-r).
func isLinkedELF(p string) bool {
	f, err := elf.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	return f.Type == elf.ET_EXEC || f.Type == elf.ET_DYN
}

// archiveMapper maps archive members to the tree's objects.
//
// The rule: a thin archive names its members' paths, which are used as they
// are. A regular archive only keeps base names, so a member maps to the
// tree's compiled objects with that base name; among those, the ones whose
// current contents equal the member's bytes win (ar copies objects
// verbatim); if several remain, those in the archive's own directory win; if
// still several (or none in that directory), all remaining are listed, since
// listing an extra object is safer for the differ than missing one. Members
// matching no compiled object are left out. All members are listed, whether
// or not the linker pulled them in.
type archiveMapper struct {
	t     *Tree
	cache map[string][]byte // object contents by Rel
}

func (am *archiveMapper) members(archive string) ([]string, error) {
	arRel, ok := am.t.rel(archive)
	if !ok {
		return nil, nil
	}
	b, err := os.ReadFile(archive)
	if errors.Is(err, fs.ErrNotExist) {
		// Deleted after the link: nothing left to attribute.
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	members, thin, err := parseArchive(b)
	if err != nil {
		return nil, err
	}
	arDir := path.Dir(arRel)
	var out []string
	for _, m := range members {
		if thin {
			p := m.Name
			if !filepath.IsAbs(p) {
				p = filepath.Join(filepath.Dir(archive), p)
			}
			if r, ok := am.t.rel(p); ok && isFile(p) {
				out = append(out, r)
			}
			continue
		}
		var cands []string
		for _, o := range am.t.Objects {
			if path.Base(o.Rel) == m.Name {
				cands = append(cands, o.Rel)
			}
		}
		if len(cands) > 1 {
			var same []string
			for _, c := range cands {
				if bytes.Equal(am.contents(c), m.Data) {
					same = append(same, c)
				}
			}
			if len(same) > 0 {
				cands = same
			}
		}
		if len(cands) > 1 {
			var local []string
			for _, c := range cands {
				if path.Dir(c) == arDir {
					local = append(local, c)
				}
			}
			if len(local) > 0 {
				cands = local
			}
		}
		out = append(out, cands...)
	}
	return out, nil
}

func (am *archiveMapper) contents(rel string) []byte {
	if b, ok := am.cache[rel]; ok {
		return b
	}
	b, _ := os.ReadFile(filepath.Join(am.t.Root, filepath.FromSlash(rel)))
	am.cache[rel] = b
	return b
}
