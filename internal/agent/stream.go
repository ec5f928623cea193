package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"livesplice/internal/repo"
)

// ErrVerify marks what the agent refused because it could not verify it:
// a bad signature, expired metadata, a version going back, a file that is
// not what the signed metadata says. Nothing it covers is ever applied.
var ErrVerify = errors.New("verification failed")

// ErrFetch marks a repository that could not be reached or read.
var ErrFetch = errors.New("cannot fetch from the update stream")

// Available is one update the verified stream offers.
type Available struct {
	repo.Entry
	Length int64  `json:"length"`
	SHA256 string `json:"sha256"`
	tf     *metadata.TargetFiles
}

// Stream is the verified view of the repository at one targets version.
type Stream struct {
	URL     string      `json:"url"`
	Version int64       `json:"version"` // targets.json version: the stream's version
	Updates []Available `json:"updates"` // sorted by id
	up      *updater.Updater
	cacheD  string
}

// client is a TUF client over the agent's state directory.
type client struct {
	url     string
	trust   string
	state   *stateDir
	retries int
	wait    time.Duration
}

// refresh runs the TUF client workflow: newer roots (key rotation) from
// the pinned one, then timestamp, snapshot and targets, each checked for
// signatures, expiry and versions that never go back against what this
// machine saw before. Every entry of the stream is parsed and checked.
func (c *client) refresh() (*Stream, error) {
	root, err := c.trustedRoot()
	if err != nil {
		return nil, err
	}
	base := strings.TrimSuffix(c.url, "/")
	if _, err := url.Parse(base); err != nil || !strings.Contains(base, "://") {
		return nil, fmt.Errorf("update stream %q: not a URL", c.url)
	}
	cfg, err := config.New(base+"/"+repo.MetadataDir, root)
	if err != nil {
		return nil, fmt.Errorf("update stream %s: %w", c.url, err)
	}
	cfg.RemoteTargetsURL = base + "/" + repo.TargetsDir
	cfg.LocalMetadataDir = c.state.metadataDir()
	cfg.LocalTargetsDir = c.state.downloadDir()
	cfg.Fetcher = &fetcher{client: &http.Client{Timeout: 2 * time.Minute}, tries: c.retries, wait: c.wait}
	up, err := updater.New(cfg)
	if err != nil {
		return nil, describe(c.url, err)
	}
	if err := up.Refresh(); err != nil {
		return nil, describe(c.url, err)
	}
	tm := up.GetTrustedMetadataSet()
	s := &Stream{URL: c.url, Version: tm.Targets[metadata.TARGETS].Signed.Version, up: up, cacheD: c.state.downloadDir()}
	for name, tf := range up.GetTopLevelTargets() {
		if tf.Custom == nil {
			return nil, fmt.Errorf("update stream %s: %w: target %s has no livesplice entry", c.url, ErrVerify, name)
		}
		e, err := repo.ParseEntry(*tf.Custom)
		if err != nil {
			return nil, fmt.Errorf("update stream %s: %w: target %s: %w", c.url, ErrVerify, name, err)
		}
		if name != repo.FileName(e.ID) {
			return nil, fmt.Errorf("update stream %s: %w: target %s holds update %s", c.url, ErrVerify, name, e.ID)
		}
		sum, ok := tf.Hashes["sha256"]
		if !ok {
			return nil, fmt.Errorf("update stream %s: %w: target %s has no sha256", c.url, ErrVerify, name)
		}
		s.Updates = append(s.Updates, Available{Entry: *e, Length: tf.Length, SHA256: hex.EncodeToString(sum), tf: tf})
	}
	sort.Slice(s.Updates, func(i, j int) bool { return s.Updates[i].ID < s.Updates[j].ID })
	return s, nil
}

// trustedRoot is the newest root this machine verified (kept in the state
// directory after a rotation), or the pinned root file if that is newer
// or nothing was verified yet.
func (c *client) trustedRoot() ([]byte, error) {
	pinned, err := os.ReadFile(c.trust)
	if err != nil {
		return nil, fmt.Errorf("trusted root: %w (install the repository's root.json there, or give --trust)", err)
	}
	pr, err := metadata.Root().FromBytes(pinned)
	if err != nil {
		return nil, fmt.Errorf("trusted root %s: %w", c.trust, err)
	}
	cached, err := os.ReadFile(filepath.Join(c.state.metadataDir(), "root.json"))
	if err != nil {
		return pinned, nil
	}
	cr, err := metadata.Root().FromBytes(cached)
	if err != nil || cr.Signed.Version < pr.Signed.Version {
		return pinned, nil
	}
	return cached, nil
}

// download returns an update file's bytes, verified against its signed
// length and sha256: from the cache when it holds them, else from the
// stream.
func (s *Stream) download(a Available) ([]byte, error) {
	path := filepath.Join(s.cacheD, repo.FileName(a.ID))
	if _, data, err := s.up.FindCachedTarget(a.tf, path); err == nil && data != nil {
		return data, nil
	}
	_, data, err := s.up.DownloadTarget(a.tf, path, "")
	if err != nil {
		return nil, describe(s.URL, err)
	}
	return data, nil
}

// describe turns go-tuf's errors into what the refusal means.
func describe(where string, err error) error {
	what := ""
	switch {
	case errors.Is(err, &metadata.ErrExpiredMetadata{}):
		what = "expired metadata (a stale or frozen stream)"
	case errors.Is(err, &metadata.ErrBadVersionNumber{}):
		what = "rollback refused: the stream offers older metadata than this machine has seen"
	case errors.Is(err, &metadata.ErrUnsignedMetadata{}):
		what = "bad signature: not signed by the keys of the trusted root"
	case errors.Is(err, &metadata.ErrLengthOrHashMismatch{}), errors.Is(err, &metadata.ErrDownloadLengthMismatch{}):
		what = "a file does not match its signed length and hash (tampered or corrupt)"
	case errors.Is(err, &metadata.ErrRepository{}), errors.Is(err, &metadata.ErrValue{}), errors.Is(err, &metadata.ErrType{}):
		what = "malformed metadata"
	}
	if what != "" {
		return fmt.Errorf("update stream %s: %w: %s: %w", where, ErrVerify, what, err)
	}
	var he *metadata.ErrDownloadHTTP
	if errors.As(err, &he) || errors.Is(err, &metadata.ErrDownload{}) {
		return fmt.Errorf("update stream %s: %w: %w", where, ErrFetch, err)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("update stream %s: %w: %w", where, ErrFetch, err)
	}
	return fmt.Errorf("update stream %s: %w", where, err)
}

// fetcher downloads with a few retries on failed connections and cut
// transfers (a server restarted mid-download), never on an HTTP status:
// a 404 is how TUF learns there is no newer root.
type fetcher struct {
	client *http.Client
	tries  int
	wait   time.Duration
}

func (f *fetcher) DownloadFile(u string, maxLength int64, _ time.Duration) ([]byte, error) {
	tries := max(f.tries, 1)
	var last error
	for i := 0; i < tries; i++ {
		if i > 0 {
			time.Sleep(f.wait * time.Duration(i))
		}
		data, retry, err := f.once(u, maxLength)
		if err == nil || !retry {
			return data, err
		}
		last = err
	}
	return nil, fmt.Errorf("%d tries: %w", tries, last)
}

func (f *fetcher) once(u string, maxLength int64) ([]byte, bool, error) {
	res, err := f.client.Get(u)
	if err != nil {
		return nil, true, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, false, &metadata.ErrDownloadHTTP{StatusCode: res.StatusCode, URL: u}
	}
	if res.ContentLength > maxLength {
		return nil, false, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s: %d bytes, more than the %d expected", u, res.ContentLength, maxLength)}
	}
	data, err := io.ReadAll(io.LimitReader(res.Body, maxLength+1))
	if err != nil {
		return nil, true, fmt.Errorf("download %s: %w", u, err)
	}
	if int64(len(data)) > maxLength {
		return nil, false, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s: more than the %d bytes expected", u, maxLength)}
	}
	return data, false, nil
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
