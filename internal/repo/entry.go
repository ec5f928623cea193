package repo

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"

	"livesplice/internal/update"
)

// Entry is what the stream says about one published update: the custom
// field of its target in targets.json, signed with the rest. The agent
// decides from it alone which running objects an update is for, before it
// downloads the file.
type Entry struct {
	ID       string        `json:"id"`
	Kind     string        `json:"kind"` // update.KindProcess or update.KindKernel
	Requires []string      `json:"requires,omitempty"`
	Release  string        `json:"release,omitempty"` // kernel: uname -r it was built for
	Targets  []EntryTarget `json:"targets"`
}

// EntryTarget is one object an update patches.
type EntryTarget struct {
	Name   string `json:"name"`             // file name of the executable or library
	Soname string `json:"soname,omitempty"` // DT_SONAME of a library
	// PreBuildID is the build-id of the pre build the update was made
	// from: a running object with it is the target whatever its name.
	PreBuildID string `json:"pre_build_id,omitempty"`
	// BuildIDs are the GNU build-ids of the shipped builds the update is
	// for (repo add --binary). Empty: every object with this name or
	// soname is a candidate and run-pre matching decides.
	BuildIDs []string `json:"build_ids,omitempty"`
}

// FileName is the target path of an update in the stream.
func FileName(id string) string { return id + ".lsu" }

// EntryOf describes an update file for the stream.
func EntryOf(f *update.File) Entry {
	e := Entry{ID: f.ID, Kind: f.Kind, Requires: f.Requires, Targets: []EntryTarget{}}
	if f.Kernel != nil {
		e.Release = f.Kernel.Release
	}
	for _, t := range f.Targets {
		e.Targets = append(e.Targets, EntryTarget{Name: filepath.Base(t.Path), Soname: t.Soname, PreBuildID: t.PreBuildID})
	}
	return e
}

// ParseEntry decodes and checks an entry read from signed metadata. A
// signature proves who wrote it, not that it is well-formed, so every
// field the agent relies on is checked.
func ParseEntry(raw []byte) (*Entry, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var e Entry
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("stream entry: %w", err)
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return &e, nil
}

// Validate checks an entry's fields.
func (e *Entry) Validate() error {
	if !update.ValidID(e.ID) {
		return fmt.Errorf("stream entry: bad update id %q", e.ID)
	}
	if e.Kind != update.KindProcess && e.Kind != update.KindKernel {
		return fmt.Errorf("stream entry %s: unknown kind %q", e.ID, e.Kind)
	}
	for _, r := range e.Requires {
		if !update.ValidID(r) || r == e.ID {
			return fmt.Errorf("stream entry %s: bad required id %q", e.ID, r)
		}
	}
	if len(e.Targets) == 0 {
		return fmt.Errorf("stream entry %s: no targets", e.ID)
	}
	for _, t := range e.Targets {
		if t.Name == "" || t.Name != filepath.Base(t.Name) || t.Name == "." || t.Name == ".." {
			return fmt.Errorf("stream entry %s: bad target name %q", e.ID, t.Name)
		}
		for _, b := range append(slices.Clone(t.BuildIDs), t.PreBuildID) {
			if b == "" {
				continue
			}
			if _, err := hex.DecodeString(b); err != nil || len(b) < 8 || len(b) > 128 {
				return fmt.Errorf("stream entry %s: bad build-id %q", e.ID, b)
			}
		}
	}
	return nil
}

// Matches reports whether a mapped object (its file name, soname and
// build-id) is one of the entry's targets: its build-id is the pre
// build's or one of the shipped builds'; or, when the publisher named no
// shipped build, its name or soname is the target's (run-pre matching
// then decides, as for apply --all).
func (e *Entry) Matches(name, soname, buildID string) bool {
	for _, t := range e.Targets {
		if buildID != "" && buildID == t.PreBuildID {
			return true
		}
		if len(t.BuildIDs) > 0 {
			for _, b := range t.BuildIDs {
				if buildID != "" && b == buildID {
					return true
				}
			}
			continue
		}
		if name == t.Name || (t.Soname != "" && (soname == t.Soname || name == t.Soname)) {
			return true
		}
	}
	return false
}
