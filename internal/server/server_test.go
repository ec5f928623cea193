package server

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"livesplice/internal/repo"
)

func TestServesPublicFilesOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	if err := repo.Init(dir, repo.Options{}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, repo.MetadataDir, "2.targets.json.tmp"), []byte("half"), 0o644)
	ts := httptest.NewServer(Handler(dir))
	defer ts.Close()
	get := func(path string) (int, string) {
		res, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	for _, p := range []string{"/metadata/timestamp.json", "/metadata/1.root.json", "/root.json"} {
		if code, body := get(p); code != 200 || !strings.Contains(body, `"signed"`) {
			t.Errorf("GET %s: %d %.60q", p, code, body)
		}
	}
	for _, p := range []string{"/keys/root.pem", "/metadata/", "/targets/", "/metadata/2.targets.json.tmp", "/metadata/../keys/root.pem", "/"} {
		if code, body := get(p); code == 200 {
			t.Errorf("GET %s served: %.60q", p, body)
		}
	}
}

func TestServeRefusesNonRepository(t *testing.T) {
	err := Serve(context.Background(), t.TempDir(), "127.0.0.1:0", "", nil)
	if err == nil || !strings.Contains(err.Error(), "not a repository") {
		t.Fatalf("serve of an empty directory: %v", err)
	}
}
