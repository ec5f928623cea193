package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"
	"golang.org/x/sys/unix"

	"livesplice/internal/repo"
)

// StateVersion is the version of state.json this agent reads and writes.
const StateVersion = 1

// Record is the agent's state.json: the verified set it has cached, and
// the effective version of each target on this machine.
type Record struct {
	Version int `json:"version"`
	Stream  struct {
		URL     string `json:"url,omitempty"`
		Version int64  `json:"version"` // targets version of the last verified refresh
		Checked string `json:"checked,omitempty"`
	} `json:"stream"`
	// Updates is the cached verified set by id: the files under updates/
	// with the length and hash they were verified against.
	Updates map[string]Cached `json:"updates"`
	// Targets is each target object seen running here, keyed by
	// "name@build-id": the updates it runs, oldest first.
	Targets map[string]*TargetRecord `json:"targets"`
	// Revoked are the updates the stream listed once and no longer does:
	// every run undoes them where they still run.
	Revoked []string `json:"revoked,omitempty"`
}

// Cached is one verified update file kept for offline re-application.
type Cached struct {
	repo.Entry
	Length int64  `json:"length"`
	SHA256 string `json:"sha256"`
}

// TargetRecord is the effective version of one target object.
type TargetRecord struct {
	Name          string   `json:"name"`
	BuildID       string   `json:"build_id,omitempty"`
	Updates       []string `json:"updates"`        // applied, in order: the effective version is the last
	StreamVersion int64    `json:"stream_version"` // stream version they came from
	Pids          []int    `json:"pids"`           // processes running it at the last run
	At            string   `json:"at"`
}

// stateDir is the agent's directory: metadata/ (TUF's trusted metadata),
// updates/ (verified update files), state.json and a lock file.
type stateDir struct{ dir string }

func (s *stateDir) metadataDir() string { return filepath.Join(s.dir, "metadata") }
func (s *stateDir) downloadDir() string { return filepath.Join(s.dir, "updates") }
func (s *stateDir) recordPath() string  { return filepath.Join(s.dir, "state.json") }

// lock creates the directory and takes its lock: agents sharing a state
// directory run one at a time.
func (s *stateDir) lock() (func(), error) {
	for _, d := range []string{s.dir, s.metadataDir(), s.downloadDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("state directory: %w", err)
		}
	}
	f, err := os.OpenFile(filepath.Join(s.dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock state directory %s: %w", s.dir, err)
	}
	return func() { f.Close() }, nil
}

func (s *stateDir) read() (*Record, error) {
	r := &Record{Version: StateVersion, Updates: map[string]Cached{}, Targets: map[string]*TargetRecord{}}
	data, err := os.ReadFile(s.recordPath())
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agent state: %w", err)
	}
	if err := json.Unmarshal(data, r); err != nil {
		return nil, fmt.Errorf("agent state %s: %w", s.recordPath(), err)
	}
	if r.Version != StateVersion {
		return nil, fmt.Errorf("agent state %s: version %d, this agent knows %d", s.recordPath(), r.Version, StateVersion)
	}
	if r.Updates == nil {
		r.Updates = map[string]Cached{}
	}
	if r.Targets == nil {
		r.Targets = map[string]*TargetRecord{}
	}
	return r, nil
}

func (s *stateDir) write(r *Record) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	// Whole or not at all, and on disk before the agent goes on (a power
	// cut must not lose what was applied).
	if err := renameio.WriteFile(s.recordPath(), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("agent state: %w", err)
	}
	return nil
}

// cachedFile reads a cached update file and checks it against the length
// and hash it was verified with.
func (s *stateDir) cachedFile(c Cached) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join(s.downloadDir(), repo.FileName(c.ID)))
	if err != nil {
		return nil, fmt.Errorf("cached update %s: %w", c.ID, err)
	}
	if int64(len(data)) != c.Length || sha256Hex(data) != c.SHA256 {
		return nil, fmt.Errorf("cached update %s: %w: the file changed since it was verified", c.ID, ErrVerify)
	}
	return data, nil
}
