package elfsym

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// readelfBuildID is the build-id readelf -n prints for path ("" for none).
func readelfBuildID(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("readelf", "-n", path).CombinedOutput()
	if err != nil {
		t.Fatalf("readelf -n %s: %v\n%s", path, err, out)
	}
	m := regexp.MustCompile(`Build ID: ([0-9a-fA-F]+)`).FindSubmatch(out)
	if m == nil {
		return ""
	}
	return string(m[1])
}

func TestBuildID(t *testing.T) {
	for _, c := range []struct {
		name  string
		flags []string
		none  bool
	}{
		{"sha1", []string{"-Wl,--build-id=sha1"}, false},
		{"md5", []string{"-Wl,--build-id=md5"}, false},
		{"shared", []string{"-shared", "-fPIC", "-Wl,--build-id=sha1"}, false},
		{"none", []string{"-Wl,--build-id=none"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := build(t, c.flags...) // the flags come after build's -Wl,--build-id: the last one wins
			want := readelfBuildID(t, path)
			if c.none != (want == "") {
				t.Fatalf("readelf -n says build-id %q with %v", want, c.flags)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := BuildID(f)
			if err != nil {
				t.Fatal(err)
			}
			if got != strings.ToLower(want) {
				t.Fatalf("BuildID = %q, readelf -n says %q", got, want)
			}
			tab, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			if tab.BuildID != got {
				t.Fatalf("Load's BuildID %q, BuildID %q", tab.BuildID, got)
			}
		})
	}
}

func TestBuildIDNotELF(t *testing.T) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if id, err := BuildID(f); err == nil {
		t.Fatalf("build-id of a text file: %q, no error", id)
	}
}
