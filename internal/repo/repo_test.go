package repo

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"livesplice/internal/update"
)

// writeUpdate writes a minimal valid update file.
func writeUpdate(t *testing.T, dir, id string, requires ...string) string {
	t.Helper()
	f := &update.File{ID: id, Kind: update.KindProcess, Patch: strings.Repeat("0", 64), Requires: requires,
		Targets: []update.Target{{Path: "bin/prog", PreBuildID: "0123456789abcdef"}}}
	data, err := update.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, id+".lsu")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestInitAddVersions(t *testing.T) {
	dir := t.TempDir()
	r := filepath.Join(dir, "repo")
	if err := Init(r, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := Init(r, Options{}); err == nil {
		t.Fatal("a second init over a repository succeeded")
	}
	if st, err := os.Stat(filepath.Join(r, KeysDir, "root.pem")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("root key: %v %v", st, err)
	}
	a := writeUpdate(t, dir, "a")
	b := writeUpdate(t, dir, "b", "a")
	if err := Add(r, []string{b}, nil, Options{}); err == nil || !strings.Contains(err.Error(), "requires a, which is not in the stream") {
		t.Fatalf("add b before a: %v", err)
	}
	if err := Add(r, []string{a, b}, nil, Options{}); err != nil {
		t.Fatal(err)
	}
	rp, err := load(r)
	if err != nil {
		t.Fatal(err)
	}
	if rp.targets.Signed.Version != 2 || rp.snapshot.Signed.Version != 2 || rp.timestamp.Signed.Version != 2 || len(rp.targets.Signed.Targets) != 2 {
		t.Fatalf("versions after add: targets %d snapshot %d timestamp %d, %d targets", rp.targets.Signed.Version, rp.snapshot.Signed.Version, rp.timestamp.Signed.Version, len(rp.targets.Signed.Targets))
	}
	e, err := ParseEntry(*rp.targets.Signed.Targets["b.lsu"].Custom)
	if err != nil || e.ID != "b" || strings.Join(e.Requires, ",") != "a" || e.Targets[0].Name != "prog" {
		t.Fatalf("entry of b: %+v %v", e, err)
	}
	// The same bytes again: nothing to do; other bytes under the id: refused.
	if err := Add(r, []string{a}, nil, Options{}); err != nil {
		t.Fatal(err)
	}
	if rp, _ := load(r); rp.targets.Signed.Version != 2 {
		t.Fatalf("re-adding the same file published version %d", rp.targets.Signed.Version)
	}
	a2 := writeUpdate(t, t.TempDir(), "a", "b")
	if err := Add(r, []string{a2}, nil, Options{}); err == nil || !strings.Contains(err.Error(), "already published") {
		t.Fatalf("changed a: %v", err)
	}
	// Removed and published again: only with the same bytes.
	if err := Remove(r, []string{"a"}, Options{}); err == nil || !strings.Contains(err.Error(), "b requires a") {
		t.Fatalf("remove a under b: %v", err)
	}
	if err := Remove(r, []string{"a", "b"}, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := Add(r, []string{a2}, nil, Options{}); err == nil || !strings.Contains(err.Error(), "never reused") {
		t.Fatalf("reused id: %v", err)
	}
	if err := Add(r, []string{a, b}, nil, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := Refresh(r, Options{}); err != nil {
		t.Fatal(err)
	}
	rp, _ = load(r)
	if rp.targets.Signed.Version != 4 || rp.snapshot.Signed.Version != 5 || rp.timestamp.Signed.Version != 5 || len(rp.targets.Signed.Targets) != 2 {
		t.Fatalf("versions after refresh: %d %d %d", rp.targets.Signed.Version, rp.snapshot.Signed.Version, rp.timestamp.Signed.Version)
	}
	// Every metadata file verifies against the root.
	if err := rp.root.VerifyDelegate(metadata.TARGETS, rp.targets); err != nil {
		t.Fatal(err)
	}
	if err := rp.root.VerifyDelegate(metadata.TIMESTAMP, rp.timestamp); err != nil {
		t.Fatal(err)
	}
}

func TestRotateKey(t *testing.T) {
	r := filepath.Join(t.TempDir(), "repo")
	if err := Init(r, Options{}); err != nil {
		t.Fatal(err)
	}
	old, _ := load(r)
	if err := RotateKey(r, metadata.ROOT, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := RotateKey(r, "nobody", Options{}); err == nil {
		t.Fatal("rotated an unknown role")
	}
	cur, err := load(r)
	if err != nil {
		t.Fatal(err)
	}
	if cur.root.Signed.Version != 2 {
		t.Fatalf("root version %d after rotation", cur.root.Signed.Version)
	}
	// The new root is signed by the old root's keys (agents can follow)
	// and by its own.
	if err := old.root.VerifyDelegate(metadata.ROOT, cur.root); err != nil {
		t.Fatalf("old root does not vouch for the new one: %v", err)
	}
	if err := cur.root.VerifyDelegate(metadata.ROOT, cur.root); err != nil {
		t.Fatal(err)
	}
	if err := old.root.VerifyDelegate(metadata.TIMESTAMP, cur.timestamp); err != nil {
		t.Fatal(err) // the timestamp key did not change
	}
}

func TestEntryMatches(t *testing.T) {
	e := Entry{ID: "x", Kind: update.KindProcess, Targets: []EntryTarget{
		{Name: "prog", PreBuildID: "aaaaaaaa"},
		{Name: "libfoo.so.1.2", Soname: "libfoo.so.1", BuildIDs: []string{"bbbbbbbb"}},
	}}
	for _, c := range []struct {
		name, soname, id string
		want             bool
	}{
		{"prog", "", "cccccccc", true},           // by name: no shipped build named
		{"renamed", "", "aaaaaaaa", true},        // the pre build
		{"libfoo.so.1.2", "", "dddddddd", false}, // another build of a keyed target
		{"other", "libfoo.so.1", "bbbbbbbb", true},
		{"other", "", "", false},
	} {
		if got := e.Matches(c.name, c.soname, c.id); got != c.want {
			t.Errorf("Matches(%q, %q, %q) = %v", c.name, c.soname, c.id, got)
		}
	}
}

func FuzzParseEntry(f *testing.F) {
	f.Add([]byte(`{"id":"a","kind":"process","targets":[{"name":"prog","build_ids":["0011223344"]}]}`))
	f.Add([]byte(`{"id":"b","kind":"kernel","requires":["a"],"release":"6.1","targets":[{"name":"vmlinux"}]}`))
	f.Add([]byte(`{"id":"../x","kind":"process","targets":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := ParseEntry(data)
		if err != nil {
			return
		}
		if !update.ValidID(e.ID) || len(e.Targets) == 0 {
			t.Fatalf("accepted %q", data)
		}
		for _, tg := range e.Targets {
			if strings.Contains(tg.Name, "/") {
				t.Fatalf("accepted target name %q", tg.Name)
			}
		}
		e.Matches("prog", "", "0011223344")
	})
}

func TestBuildID(t *testing.T) {
	// Debian links every binary with a GNU build-id.
	want, err := exec.Command("sh", "-c", "readelf -n /bin/sh | sed -n 's/.*Build ID: //p'").Output()
	if err != nil || len(want) == 0 {
		t.Fatalf("readelf: %v %q", err, want)
	}
	id, _, err := BuildID("/bin/sh")
	if err != nil || id != strings.TrimSpace(string(want)) {
		t.Fatalf("build-id of /bin/sh: %q %v, readelf says %q", id, err, want)
	}
	if _, _, err := BuildID("/proc/self/status"); err == nil {
		t.Fatal("build-id of a text file")
	}
}
