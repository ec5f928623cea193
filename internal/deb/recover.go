package deb

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"livesplice/internal/build"
	"livesplice/internal/repo"
	"livesplice/internal/update"
)

// Recovering the symbols of a stripped file: Debian's builds are
// reproducible, so building the same source version here the same way
// (same compiler, same flags, no function sections: create --deb's plain
// build, build.RunPlain) gives the same code, and that build, which nobody
// stripped, still has its .symtab. The rule: the built output that the
// installed file is (MatchOutputs), when its every allocated section
// (code, read-only data, data) has the same address, size and bytes as the
// installed file's, gives its symbols; else only what run-pre matching of
// that output's objects proves (match.go).

// Recovered is the outcome of the plain build for one installed file.
type Recovered struct {
	Symtab *update.Symtab // nil when the build does not match
	Reason string         // why not, when Symtab is nil
	// How the symbols were recovered: "debug symbols" (the build-id's
	// Debian debug file), "identical rebuild", or "matching" (only the
	// symbols proved by run-pre matching, match.go).
	Method string
}

// RecoverTree recovers the symbols of each installed file from the plain
// build tree: Debian's debug symbols for its build-id, else the output
// outputOf names for it (MatchOutputs: by build-id, code or name; a file
// Debian ships under another name included) when that output has the same
// code, else the symbols that run-pre matching of the objects linked into
// that output proves (match.go). create --deb refuses an installed file
// no output is before recovering, so outputOf names every file.
func RecoverTree(tree *build.Tree, installed []string, outputOf map[string]string) (map[string]Recovered, error) {
	objs := map[string][]string{}
	for _, o := range tree.Outputs {
		var paths []string
		for _, rel := range o.Objects {
			paths = append(paths, filepath.Join(tree.Root, filepath.FromSlash(rel)))
		}
		objs[o.Rel] = paths
	}
	res := map[string]Recovered{}
	for _, inst := range installed {
		if r, ok := fromDebugSymbols(inst); ok {
			res[inst] = r
			continue
		}
		rel := outputOf[inst]
		if rel == "" {
			res[inst] = recoverOne(inst, nil)
			continue
		}
		r := recoverOne(inst, []string{filepath.Join(tree.Root, filepath.FromSlash(rel))})
		if r.Symtab == nil {
			r = recoverByMatching(inst, objs[rel], r.Reason)
		}
		res[inst] = r
	}
	return res, nil
}

// recoverByMatching is the last resort for a file the plain build does not
// reproduce: its symbols as far as run-pre matching of the objects linked
// into the output it is proves them.
func recoverByMatching(inst string, objs []string, why string) Recovered {
	if len(objs) == 0 {
		return Recovered{Reason: why}
	}
	st, _, err := matchRecover(inst, objs)
	if err != nil {
		return Recovered{Reason: why + "; matching the plain build's code against it: " + err.Error()}
	}
	if len(st.Symbols) == 0 {
		return Recovered{Reason: why + "; and none of the plain build's code matches it"}
	}
	return Recovered{Symtab: st, Method: "matching"}
}

func recoverOne(inst string, cands []string) Recovered {
	if len(cands) == 0 {
		return Recovered{Reason: "the plain build made no file of that name"}
	}
	var reasons []string
	var found []string
	for _, c := range cands {
		if err := sameCode(inst, c); err != nil {
			reasons = append(reasons, err.Error())
			continue
		}
		found = append(found, c)
	}
	if len(found) == 0 {
		return Recovered{Reason: "the plain build's code differs (another compiler or flags?): " + strings.Join(reasons, "; ")}
	}
	// Two identical rebuilt files have the same symbols at the same places
	// only if their tables agree; take the first, check the others.
	st, err := symtab(inst, found[0])
	if err != nil {
		return Recovered{Reason: err.Error()}
	}
	for _, c := range found[1:] {
		other, err := symtab(inst, c)
		if err != nil || !sameSymtab(st, other) {
			return Recovered{Reason: "several built files match with different symbol tables"}
		}
	}
	return Recovered{Symtab: st, Method: "identical rebuild"}
}

// sameCode checks that every allocated section of the installed file is in
// the rebuilt one at the same address with the same bytes, the build-id
// note aside (it hashes the unstripped file, debug information included).
func sameCode(inst, rebuilt string) error {
	fi, err := elf.Open(inst)
	if err != nil {
		return err
	}
	defer fi.Close()
	fr, err := elf.Open(rebuilt)
	if err != nil {
		return err
	}
	defer fr.Close()
	n := 0
	for _, s := range fi.Sections {
		if s.Flags&elf.SHF_ALLOC == 0 || s.Name == ".note.gnu.build-id" {
			continue
		}
		n++
		r := fr.Section(s.Name)
		if r == nil || r.Addr != s.Addr || r.Size != s.Size || r.Type != s.Type {
			return fmt.Errorf("%s: section %s not at the same place in the rebuild", filepath.Base(inst), s.Name)
		}
		if s.Type == elf.SHT_NOBITS {
			continue
		}
		a, err := s.Data()
		if err != nil {
			return fmt.Errorf("%s: section %s: %w", inst, s.Name, err)
		}
		b, err := r.Data()
		if err != nil {
			return fmt.Errorf("%s: section %s: %w", rebuilt, s.Name, err)
		}
		if !bytes.Equal(a, b) {
			return fmt.Errorf("%s: section %s differs from the rebuild's", filepath.Base(inst), s.Name)
		}
	}
	m := 0
	for _, s := range fr.Sections {
		if s.Flags&elf.SHF_ALLOC != 0 && s.Name != ".note.gnu.build-id" {
			m++
		}
	}
	if n == 0 || n != m {
		return fmt.Errorf("%s: %d allocated sections, the rebuild has %d", filepath.Base(inst), n, m)
	}
	return nil
}

// symtab reads the functions and objects of the rebuilt file's .symtab,
// for the installed file's build-id.
func symtab(inst, rebuilt string) (*update.Symtab, error) {
	id, _, err := repo.BuildID(inst)
	if err == nil && id == "" {
		err = errors.New("no GNU build-id")
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", inst, err)
	}
	f, err := elf.Open(rebuilt)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("rebuilt %s: no symbol table: %w", filepath.Base(rebuilt), err)
	}
	st := &update.Symtab{BuildID: id}
	file := ""
	for _, s := range syms {
		typ, bind := elf.ST_TYPE(s.Info), elf.ST_BIND(s.Info)
		if typ == elf.STT_FILE {
			file = s.Name
			continue
		}
		if s.Name == "" || s.Section == elf.SHN_UNDEF || s.Section == elf.SHN_ABS || (typ != elf.STT_FUNC && typ != elf.STT_OBJECT) {
			continue
		}
		y := update.SymtabSym{Name: s.Name, Addr: s.Value, Size: s.Size, Func: typ == elf.STT_FUNC}
		if bind == elf.STB_LOCAL {
			y.File = file
		} else {
			y.Global = true
		}
		st.Symbols = append(st.Symbols, y)
	}
	return st, nil
}

func sameSymtab(a, b *update.Symtab) bool {
	if a.BuildID != b.BuildID || len(a.Symbols) != len(b.Symbols) {
		return false
	}
	for i := range a.Symbols {
		if a.Symbols[i] != b.Symbols[i] {
			return false
		}
	}
	return true
}

// Check refuses, by name, the symbols an update needs from the recovered
// table that it does not have (matching recovers only what it proves):
// each replaced function that the file does not export, and each static
// that the new code refers to and no replaced function's pre code refers
// to (run-pre matching reads those from the running code). exported says
// which names the installed file's .dynsym defines.
func (r Recovered) Check(inst string, t *update.Target, exported func(string) bool) error {
	if r.Symtab == nil {
		return nil
	}
	have := map[string]bool{}
	for _, y := range r.Symtab.Symbols {
		have[y.File+"\x00"+y.Name] = true
		have["\x00"+y.Name] = true
	}
	found := func(y update.Symbol) bool {
		if y.Kind == update.SymLocal {
			return have[y.File+"\x00"+y.Name]
		}
		return exported(y.Name) || have["\x00"+y.Name]
	}
	var missing []string
	seen := map[int]bool{}
	for _, fn := range t.Functions {
		if fn.Status != update.StatusReplaced {
			continue
		}
		if y := t.Symbols[fn.Symbol]; !found(y) && !seen[fn.Symbol] {
			seen[fn.Symbol] = true
			missing = append(missing, fn.Name)
		}
		if fn.Pre != nil {
			for _, rl := range fn.Pre.Relocs {
				seen[rl.Symbol] = true // read from the running code
			}
		}
	}
	for _, sec := range t.Sections {
		for _, rl := range sec.Relocs {
			if y := t.Symbols[rl.Symbol]; y.Kind == update.SymLocal && !seen[rl.Symbol] && !found(y) {
				seen[rl.Symbol] = true
				missing = append(missing, y.Name)
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%s is stripped and the symbols recovered by %s lack %s: no exported function's code leads to them through code that matches (the rebuild's code differs there?), so where they are in the installed file is not proved", inst, r.Method, strings.Join(missing, ", "))
}
