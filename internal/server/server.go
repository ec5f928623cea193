// Package server serves an update stream repository over HTTP: the
// public metadata/ and targets/ directories and root.json, never keys/.
// Any static web server or object store that serves the same files does
// the same job; agents trust the signatures, not the server. With a
// fleet database it also takes the agents' opt-in reports and shows the
// fleet's page (package fleet).
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"livesplice/internal/fleet"
	"livesplice/internal/repo"
)

// Handler serves the public files of the repository in dir.
func Handler(dir string) http.Handler {
	mux := http.NewServeMux()
	for _, d := range []string{repo.MetadataDir, repo.TargetsDir} {
		fs := http.FileServer(noListing{http.Dir(filepath.Join(dir, d))})
		mux.Handle("GET /"+d+"/", http.StripPrefix("/"+d, fs))
	}
	mux.HandleFunc("GET /"+repo.RootFile, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		http.ServeFile(w, r, filepath.Join(dir, repo.RootFile))
	})
	return mux
}

// noListing refuses directory listings and the temporary files a
// publisher writes before renaming them.
type noListing struct{ fs http.FileSystem }

func (n noListing) Open(name string) (http.File, error) {
	if strings.HasSuffix(name, "/") || strings.HasSuffix(name, ".tmp") {
		return nil, errors.New("not found")
	}
	f, err := n.fs.Open(name)
	if err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err != nil || st.IsDir() {
		f.Close()
		return nil, errors.New("not found")
	}
	return f, nil
}

// Serve listens on addr and serves dir until ctx ends; with fleetDB (a
// path) also the fleet report and page. ready, if not nil, receives the
// address it listens on (addr may have port 0).
func Serve(ctx context.Context, dir, addr, fleetDB string, ready func(string)) error {
	if _, err := os.Stat(filepath.Join(dir, repo.RootFile)); err != nil {
		return fmt.Errorf("serve %s: not a repository: %w (create one with 'livesplice repo init')", dir, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	h := Handler(dir)
	if fleetDB != "" {
		st, err := fleet.Open(fleetDB)
		if err != nil {
			ln.Close()
			return fmt.Errorf("serve: %w", err)
		}
		defer st.Close()
		mux := http.NewServeMux()
		fh := fleet.Handler(st, func() int64 { v, _ := repo.Version(dir); return v })
		mux.Handle("/fleet", fh)
		mux.Handle("/fleet/", fh)
		mux.Handle("/fleet.json", fh)
		mux.Handle("/", h)
		h = mux
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if ready != nil {
		ready(ln.Addr().String())
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
