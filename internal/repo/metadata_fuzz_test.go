package repo

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// FuzzMetadata feeds the stream's signed metadata, as an agent downloads
// it, to the parsers and the signature check it goes through (go-tuf's):
// nothing may panic. The seeds are a real repository's files.
func FuzzMetadata(f *testing.F) {
	dir := f.TempDir()
	if err := Init(dir, Options{}); err != nil {
		f.Fatal(err)
	}
	rootData, err := os.ReadFile(filepath.Join(dir, RootFile))
	if err != nil {
		f.Fatal(err)
	}
	root, err := metadata.Root().FromBytes(rootData)
	if err != nil {
		f.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, MetadataDir, "*.json"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if m, err := metadata.Root().FromBytes(data); err == nil {
			root.VerifyDelegate(metadata.ROOT, m)
		}
		if m, err := metadata.Targets().FromBytes(data); err == nil {
			root.VerifyDelegate(metadata.TARGETS, m)
		}
		if m, err := metadata.Snapshot().FromBytes(data); err == nil {
			root.VerifyDelegate(metadata.SNAPSHOT, m)
		}
		if m, err := metadata.Timestamp().FromBytes(data); err == nil {
			root.VerifyDelegate(metadata.TIMESTAMP, m)
		}
	})
}
