package deb

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"livesplice/internal/repo"
	"livesplice/internal/update"
)

// debugDir is where Debian's -dbgsym packages put the debug files, by
// build-id (a variable for the tests).
var debugDir = "/usr/lib/debug/.build-id"

// fromDebugSymbols recovers the symbol table of inst from Debian's debug
// symbols for its exact build-id, when the machine has them: the debug
// file of an installed -dbgsym package, else one from a debuginfod server
// named in DEBUGINFOD_URLS. The debug file keeps the .symtab the strip
// took out, so nothing needs proving beyond the build-id.
func fromDebugSymbols(inst string) (Recovered, bool) {
	id, _, err := repo.BuildID(inst)
	if err != nil || len(id) < 3 {
		return Recovered{}, false
	}
	if p := filepath.Join(debugDir, id[:2], id[2:]+".debug"); fileExists(p) {
		if st, err := debugSymtab(inst, id, p); err == nil {
			return Recovered{Symtab: st, Method: "debug symbols"}, true
		}
	}
	for _, u := range strings.Fields(os.Getenv("DEBUGINFOD_URLS")) {
		p, err := fetchDebuginfo(u, id)
		if err != nil {
			continue
		}
		st, err := debugSymtab(inst, id, p)
		os.Remove(p)
		if err == nil {
			return Recovered{Symtab: st, Method: "debug symbols"}, true
		}
	}
	return Recovered{}, false
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// debugSymtab reads a debug file's .symtab for inst, if the debug file is
// for inst's build-id.
func debugSymtab(inst, id, debug string) (*update.Symtab, error) {
	did, _, err := repo.BuildID(debug)
	if err != nil {
		return nil, err
	}
	if did != id {
		return nil, fmt.Errorf("%s: build-id %s, not %s", debug, did, id)
	}
	return symtab(inst, debug)
}

// fetchDebuginfo gets the debug file of build-id id from a debuginfod
// server (its /buildid/ID/debuginfo) into a temporary file.
func fetchDebuginfo(server, id string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(server, "/")+"/buildid/"+id+"/debuginfo", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("debuginfod %s: %s", server, resp.Status)
	}
	f, err := os.CreateTemp("", "livesplice-debuginfo-")
	if err != nil {
		return "", err
	}
	_, err = io.Copy(f, io.LimitReader(resp.Body, 4<<30))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}
