package deb

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"livesplice/internal/repo"
)

// A stripped file's symbols come from the debug file of its build-id: from
// the -dbgsym directory, or from a debuginfod server; a debug file of
// another build-id is not used.
func TestDebugSymbols(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "lib.c"), strings.Replace(libSrc, "%s", "1", 1))
	sh(t, dir, "gcc -O2 -g -shared -fPIC -Wl,--build-id -o lib.so lib.c && objcopy --only-keep-debug lib.so lib.debug && mkdir shipped && strip --strip-all -o shipped/lib.so lib.so")
	shipped := filepath.Join(dir, "shipped", "lib.so")
	id, _, err := repo.BuildID(shipped)
	if err != nil || id == "" {
		t.Fatalf("build-id: %q %v", id, err)
	}
	debug, _ := os.ReadFile(filepath.Join(dir, "lib.debug"))
	defer func(d string) { debugDir = d }(debugDir)
	t.Setenv("DEBUGINFOD_URLS", "")

	debugDir = filepath.Join(dir, "none")
	if r, ok := fromDebugSymbols(shipped); ok {
		t.Fatalf("no debug file: recovered %+v", r)
	}
	debugDir = filepath.Join(dir, "build-id")
	write(t, filepath.Join(debugDir, id[:2], id[2:]+".debug"), string(debug))
	r, ok := fromDebugSymbols(shipped)
	if !ok || r.Method != "debug symbols" || r.Symtab.BuildID != id || !hasSym(r, "twice") {
		t.Fatalf("dbgsym: %v %+v", ok, r)
	}

	debugDir = filepath.Join(dir, "none")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, q *http.Request) {
		if q.URL.Path != "/buildid/"+id+"/debuginfo" {
			http.NotFound(w, q)
			return
		}
		w.Write(debug)
	}))
	defer srv.Close()
	t.Setenv("DEBUGINFOD_URLS", "http://127.0.0.1:1 "+srv.URL)
	if r, ok := fromDebugSymbols(shipped); !ok || !hasSym(r, "twice") {
		t.Fatalf("debuginfod: %v %+v", ok, r)
	}

	// Another build's debug file under this build-id is refused.
	write(t, filepath.Join(dir, "other.c"), strings.Replace(libSrc, "%s", "2", 1))
	sh(t, dir, "gcc -O2 -g -shared -fPIC -Wl,--build-id -o other.so other.c")
	other, _ := os.ReadFile(filepath.Join(dir, "other.so"))
	t.Setenv("DEBUGINFOD_URLS", "")
	debugDir = filepath.Join(dir, "wrong")
	write(t, filepath.Join(debugDir, id[:2], id[2:]+".debug"), string(other))
	if r, ok := fromDebugSymbols(shipped); ok {
		t.Fatalf("debug file of another build: recovered %+v", r)
	}
}

func hasSym(r Recovered, name string) bool {
	if r.Symtab == nil {
		return false
	}
	for _, y := range r.Symtab.Symbols {
		if y.Name == name {
			return true
		}
	}
	return false
}
