// Package repo is the publisher's side of the update stream: a TUF
// repository (root, targets, snapshot and timestamp roles, ed25519 keys,
// consistent snapshots) whose targets are update files, each described by
// a signed Entry. It creates the repository, publishes updates, re-signs
// the expiring roles and rotates keys. The layout is in docs/stream.md.
package repo

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/renameio/v2"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
	"golang.org/x/sys/unix"

	"livesplice/internal/update"
)

// The repository's directories and files, relative to its root.
const (
	KeysDir     = "keys"         // private keys, one PEM file per role; never served
	RootFile    = "root.json"    // the newest root, to install on machines as their trust anchor
	MetadataDir = "metadata"     // served: N.root.json, timestamp.json, N.snapshot.json, N.targets.json
	TargetsDir  = "targets"      // served: <sha256>.<id>.lsu
	HistoryFile = "history.json" // every id ever published with its sha256 (ids are never reused); not served
)

// Roles are the four top-level TUF roles, the order they are signed in.
var Roles = []string{metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP}

// Options tune how long signed metadata stays valid. Zero values take the
// defaults; Now is the clock (tests sign metadata that is already expired).
type Options struct {
	Now             func() time.Time
	RootExpiry      time.Duration // default 365 days
	TargetsExpiry   time.Duration // default 365 days
	SnapshotExpiry  time.Duration // default 30 days
	TimestampExpiry time.Duration // default 7 days: run `repo refresh` more often than this
}

const day = 24 * time.Hour

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now().UTC()
	}
	return time.Now().UTC()
}

func (o Options) expires(role string) time.Time {
	d := map[string]time.Duration{metadata.ROOT: o.RootExpiry, metadata.TARGETS: o.TargetsExpiry, metadata.SNAPSHOT: o.SnapshotExpiry, metadata.TIMESTAMP: o.TimestampExpiry}[role]
	if d == 0 {
		d = map[string]time.Duration{metadata.ROOT: 365 * day, metadata.TARGETS: 365 * day, metadata.SNAPSHOT: 30 * day, metadata.TIMESTAMP: 7 * day}[role]
	}
	return o.now().Add(d).Truncate(time.Second)
}

// repository is the loaded newest metadata of every role and the keys.
type repository struct {
	dir       string
	root      *metadata.Metadata[metadata.RootType]
	targets   *metadata.Metadata[metadata.TargetsType]
	snapshot  *metadata.Metadata[metadata.SnapshotType]
	timestamp *metadata.Metadata[metadata.TimestampType]
	keys      map[string]ed25519.PrivateKey
}

// Init creates a repository in dir (which must not hold one): a key per
// role, root.json, and an empty stream (targets version 1).
func Init(dir string, opt Options) error {
	if _, err := os.Stat(filepath.Join(dir, RootFile)); err == nil {
		return fmt.Errorf("repo init %s: a repository is already there", dir)
	}
	for _, d := range []string{MetadataDir, TargetsDir} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("repo init: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, KeysDir), 0o700); err != nil {
		return fmt.Errorf("repo init: %w", err)
	}
	r := &repository{dir: dir, keys: map[string]ed25519.PrivateKey{}}
	r.root = metadata.Root(opt.expires(metadata.ROOT))
	for _, role := range Roles {
		k, err := newKey(dir, role)
		if err != nil {
			return fmt.Errorf("repo init: %w", err)
		}
		r.keys[role] = k
		if err := addKey(r.root, role, k); err != nil {
			return fmt.Errorf("repo init: %w", err)
		}
	}
	if err := r.writeRoot(nil); err != nil {
		return fmt.Errorf("repo init: %w", err)
	}
	r.targets = metadata.Targets(opt.expires(metadata.TARGETS))
	r.targets.Signed.Version = 0 // publish makes it 1
	r.snapshot = metadata.Snapshot(opt.expires(metadata.SNAPSHOT))
	r.snapshot.Signed.Version = 0
	r.timestamp = metadata.Timestamp(opt.expires(metadata.TIMESTAMP))
	r.timestamp.Signed.Version = 0
	if err := r.publish(true, opt); err != nil {
		return fmt.Errorf("repo init: %w", err)
	}
	return nil
}

// Add publishes update files: each is checked, copied under targets/ by
// its hash, and described in a new version of targets.json; snapshot and
// timestamp follow. binaries are shipped builds (executables or
// libraries) whose build-ids key the targets of the same name or soname.
// Publishing an id again with the same bytes does nothing; with other
// bytes it is refused (an update id names one file forever).
func Add(dir string, files, binaries []string, opt Options) error {
	keys, err := readBinaries(binaries) // before the repository is touched
	if err != nil {
		return err
	}
	unlock, err := lockRepo(dir)
	if err != nil {
		return err
	}
	defer unlock()
	r, err := load(dir)
	if err != nil {
		return err
	}
	used := make([]bool, len(keys))
	changed := false
	hist, err := readHistory(dir)
	if err != nil {
		return err
	}
	batch := map[string]bool{}
	for _, f := range files {
		if u, err := update.ReadFile(f); err == nil {
			batch[u.ID] = true
		}
	}
	for _, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("repo add: %w", err)
		}
		u, err := update.Unmarshal(data)
		if err != nil {
			return fmt.Errorf("repo add %s: %w", path, err)
		}
		name := FileName(u.ID)
		sum := sha256.Sum256(data)
		if old, ok := r.targets.Signed.Targets[name]; ok {
			if hex.EncodeToString(old.Hashes["sha256"]) == hex.EncodeToString(sum[:]) && old.Length == int64(len(data)) {
				continue
			}
			return fmt.Errorf("repo add %s: update %s is already published with other contents (publish a fix under a new id)", path, u.ID)
		}
		if h, ok := hist[u.ID]; ok && h != hex.EncodeToString(sum[:]) {
			return fmt.Errorf("repo add %s: update %s was published before with other contents (ids are never reused: publish under a new id)", path, u.ID)
		}
		hist[u.ID] = hex.EncodeToString(sum[:])
		for _, req := range u.Requires {
			if _, ok := r.targets.Signed.Targets[FileName(req)]; !ok && !batch[req] {
				return fmt.Errorf("repo add %s: update %s requires %s, which is not in the stream (add it first or in the same command)", path, u.ID, req)
			}
		}
		e := EntryOf(u)
		for i := range e.Targets {
			for k, b := range keys {
				if b.name == e.Targets[i].Name || (b.soname != "" && b.soname == e.Targets[i].Soname) {
					e.Targets[i].BuildIDs = append(e.Targets[i].BuildIDs, b.buildID)
					used[k] = true
				}
			}
		}
		if err := e.Validate(); err != nil {
			return fmt.Errorf("repo add %s: %w", path, err)
		}
		raw, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("repo add %s: %w", path, err)
		}
		tf, err := metadata.TargetFile().FromBytes(name, data, "sha256")
		if err != nil {
			return fmt.Errorf("repo add %s: %w", path, err)
		}
		msg := json.RawMessage(raw)
		tf.Custom = &msg
		out := filepath.Join(dir, TargetsDir, hex.EncodeToString(sum[:])+"."+name)
		if err := writeAtomic(out, data, 0o644); err != nil {
			return fmt.Errorf("repo add: %w", err)
		}
		r.targets.Signed.Targets[name] = tf
		changed = true
	}
	for k, b := range keys {
		if !used[k] {
			return fmt.Errorf("repo add: --binary %s: no update names a target %s", b.path, b.name)
		}
	}
	if !changed {
		return nil
	}
	if err := writeHistory(dir, hist); err != nil {
		return err
	}
	return r.publish(true, opt)
}

// readHistory reads the ids published so far with their sha256.
func readHistory(dir string) (map[string]string, error) {
	h := map[string]string{}
	data, err := os.ReadFile(filepath.Join(dir, HistoryFile))
	if errors.Is(err, os.ErrNotExist) {
		return h, nil
	}
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", dir, err)
	}
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, fmt.Errorf("repository %s: %s: %w", dir, HistoryFile, err)
	}
	return h, nil
}

func writeHistory(dir string, h map[string]string) error {
	data, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(dir, HistoryFile), append(data, '\n'), 0o644)
}

// Remove takes updates out of the stream (a bad update pulled): agents
// undo them where they run. An update that a remaining one requires
// cannot be removed alone.
func Remove(dir string, ids []string, opt Options) error {
	unlock, err := lockRepo(dir)
	if err != nil {
		return err
	}
	defer unlock()
	r, err := load(dir)
	if err != nil {
		return err
	}
	gone := map[string]bool{}
	for _, id := range ids {
		if _, ok := r.targets.Signed.Targets[FileName(id)]; !ok {
			return fmt.Errorf("repo remove: update %s is not in the stream", id)
		}
		gone[id] = true
	}
	for name, tf := range r.targets.Signed.Targets {
		if tf.Custom == nil || gone[strings.TrimSuffix(name, ".lsu")] {
			continue
		}
		e, err := ParseEntry(*tf.Custom)
		if err != nil {
			return fmt.Errorf("repo remove: %s: %w", name, err)
		}
		for _, req := range e.Requires {
			if gone[req] {
				return fmt.Errorf("repo remove: update %s requires %s (remove both)", e.ID, req)
			}
		}
	}
	for id := range gone {
		delete(r.targets.Signed.Targets, FileName(id))
	}
	return r.publish(true, opt)
}

// Refresh re-signs snapshot and timestamp with new versions and expiry
// dates (a publisher runs it from cron, more often than the timestamp
// expires, so that agents can tell a fresh stream from a frozen one).
func Refresh(dir string, opt Options) error {
	unlock, err := lockRepo(dir)
	if err != nil {
		return err
	}
	defer unlock()
	r, err := load(dir)
	if err != nil {
		return err
	}
	return r.publish(false, opt)
}

// RotateKey replaces a role's key: a new root version lists the new key
// instead of the old one, signed by the old and the new root keys so that
// agents can follow the chain, and the role's metadata is re-signed.
func RotateKey(dir, role string, opt Options) error {
	if !slices.Contains(Roles, role) {
		return fmt.Errorf("repo rotate-key: unknown role %q (one of root, targets, snapshot, timestamp)", role)
	}
	unlock, err := lockRepo(dir)
	if err != nil {
		return err
	}
	defer unlock()
	r, err := load(dir)
	if err != nil {
		return err
	}
	var extra []ed25519.PrivateKey
	if role == metadata.ROOT {
		extra = append(extra, r.keys[metadata.ROOT]) // the old root key vouches for the new root
	}
	for _, id := range slices.Clone(r.root.Signed.Roles[role].KeyIDs) {
		if err := r.root.Signed.RevokeKey(id, role); err != nil {
			return fmt.Errorf("repo rotate-key %s: %w", role, err)
		}
	}
	k, err := newKey(dir, role)
	if err != nil {
		return fmt.Errorf("repo rotate-key %s: %w", role, err)
	}
	r.keys[role] = k
	if err := addKey(r.root, role, k); err != nil {
		return fmt.Errorf("repo rotate-key %s: %w", role, err)
	}
	r.root.Signed.Version++
	r.root.Signed.Expires = opt.expires(metadata.ROOT)
	if err := r.writeRoot(extra); err != nil {
		return fmt.Errorf("repo rotate-key %s: %w", role, err)
	}
	return r.publish(true, opt)
}

// publish signs and writes a new version of snapshot and timestamp, and of
// targets when withTargets. timestamp.json is written last: until then
// agents see the previous consistent set.
func (r *repository) publish(withTargets bool, opt Options) error {
	if withTargets {
		r.targets.Signed.Version++
		r.targets.Signed.Expires = opt.expires(metadata.TARGETS)
		if err := sign(r.targets, r.keys[metadata.TARGETS]); err != nil {
			return err
		}
		if err := r.write(r.targets.Signed.Version, metadata.TARGETS, r.targets.ToBytes); err != nil {
			return err
		}
	}
	r.snapshot.Signed.Version++
	r.snapshot.Signed.Expires = opt.expires(metadata.SNAPSHOT)
	r.snapshot.Signed.Meta = map[string]*metadata.MetaFiles{"targets.json": metadata.MetaFile(r.targets.Signed.Version)}
	if err := sign(r.snapshot, r.keys[metadata.SNAPSHOT]); err != nil {
		return err
	}
	if err := r.write(r.snapshot.Signed.Version, metadata.SNAPSHOT, r.snapshot.ToBytes); err != nil {
		return err
	}
	r.timestamp.Signed.Version++
	r.timestamp.Signed.Expires = opt.expires(metadata.TIMESTAMP)
	r.timestamp.Signed.Meta = map[string]*metadata.MetaFiles{"snapshot.json": metadata.MetaFile(r.snapshot.Signed.Version)}
	if err := sign(r.timestamp, r.keys[metadata.TIMESTAMP]); err != nil {
		return err
	}
	return r.write(0, metadata.TIMESTAMP, r.timestamp.ToBytes)
}

// writeRoot signs the root with the current root key (and extra keys: the
// previous root key on rotation) and writes N.root.json and root.json.
func (r *repository) writeRoot(extra []ed25519.PrivateKey) error {
	r.root.ClearSignatures()
	for _, k := range append(extra, r.keys[metadata.ROOT]) {
		if err := sign(r.root, k); err != nil {
			return err
		}
	}
	data, err := r.root.ToBytes(true)
	if err != nil {
		return fmt.Errorf("encode root: %w", err)
	}
	if err := writeAtomic(filepath.Join(r.dir, MetadataDir, fmt.Sprintf("%d.root.json", r.root.Signed.Version)), data, 0o644); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(r.dir, RootFile), data, 0o644)
}

func (r *repository) write(version int64, role string, enc func(bool) ([]byte, error)) error {
	data, err := enc(true)
	if err != nil {
		return fmt.Errorf("encode %s: %w", role, err)
	}
	name := role + ".json"
	if version > 0 {
		name = strconv.FormatInt(version, 10) + "." + name
	}
	return writeAtomic(filepath.Join(r.dir, MetadataDir, name), data, 0o644)
}

// load reads the newest metadata of every role and the keys.
func load(dir string) (*repository, error) {
	r := &repository{dir: dir, keys: map[string]ed25519.PrivateKey{}}
	md := filepath.Join(dir, MetadataDir)
	var err error
	if r.root, err = metadata.Root().FromFile(filepath.Join(dir, RootFile)); err != nil {
		return nil, fmt.Errorf("repository %s: %w (create one with 'livesplice repo init')", dir, err)
	}
	var tv int64
	if r.timestamp, r.snapshot, tv, err = readChain(dir); err != nil {
		return nil, err
	}
	if r.targets, err = metadata.Targets().FromFile(filepath.Join(md, fmt.Sprintf("%d.targets.json", tv))); err != nil {
		return nil, fmt.Errorf("repository %s: %w", dir, err)
	}
	for _, role := range Roles {
		if r.keys[role], err = readKey(dir, role); err != nil {
			return nil, fmt.Errorf("repository %s: %w", dir, err)
		}
	}
	return r, nil
}

func keyPath(dir, role string) string { return filepath.Join(dir, KeysDir, role+".pem") }

func newKey(dir, role string) (ed25519.PrivateKey, error) {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", role, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode %s key: %w", role, err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := writeAtomic(keyPath(dir, role), data, 0o600); err != nil {
		return nil, err
	}
	return k, nil
}

func readKey(dir, role string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(keyPath(dir, role))
	if err != nil {
		return nil, fmt.Errorf("%s key: %w", role, err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("%s key %s: not PEM", role, keyPath(dir, role))
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s key %s: %w", role, keyPath(dir, role), err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s key %s: not an ed25519 key", role, keyPath(dir, role))
	}
	return ek, nil
}

func addKey(root *metadata.Metadata[metadata.RootType], role string, k ed25519.PrivateKey) error {
	key, err := metadata.KeyFromPublicKey(k.Public())
	if err != nil {
		return err
	}
	return root.Signed.AddKey(key, role)
}

// signable is a metadata object of any role.
type signable interface {
	ClearSignatures()
	Sign(signature.Signer) (*metadata.Signature, error)
}

func sign(m signable, k ed25519.PrivateKey) error {
	s, err := signature.LoadSigner(k, crypto.Hash(0))
	if err != nil {
		return fmt.Errorf("load signer: %w", err)
	}
	if _, ok := m.(*metadata.Metadata[metadata.RootType]); !ok {
		m.ClearSignatures()
	}
	if _, err := m.Sign(s); err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	return nil
}

// binary is a shipped build named by repo add --binary.
type shipped struct{ path, name, soname, buildID string }

func readBinaries(paths []string) ([]shipped, error) {
	var out []shipped
	for _, p := range paths {
		id, soname, err := BuildID(p)
		if err != nil {
			return nil, fmt.Errorf("repo add: --binary %s: %w", p, err)
		}
		if id == "" {
			return nil, fmt.Errorf("repo add: --binary %s: no GNU build-id note (link with --build-id)", p)
		}
		out = append(out, shipped{path: p, name: filepath.Base(p), soname: soname, buildID: id})
	}
	return out, nil
}

// lockRepo serialises publishers of one repository.
func lockRepo(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, KeysDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("repository %s: no keys directory (create one with 'livesplice repo init')", dir)
		}
		return nil, fmt.Errorf("repository %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock repository %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

// writeAtomic writes a file whole or not at all, and on disk before the
// rename publishes it.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	return renameio.WriteFile(path, data, mode)
}

// Version returns the stream's version (that of targets.json) as the
// repository in dir publishes it now.
func Version(dir string) (int64, error) {
	_, _, v, err := readChain(dir)
	return v, err
}

// readChain reads the published timestamp and the snapshot it names, and
// returns the version of targets.json that snapshot names.
func readChain(dir string) (*metadata.Metadata[metadata.TimestampType], *metadata.Metadata[metadata.SnapshotType], int64, error) {
	md := filepath.Join(dir, MetadataDir)
	ts, err := metadata.Timestamp().FromFile(filepath.Join(md, "timestamp.json"))
	if err != nil {
		return nil, nil, 0, fmt.Errorf("repository %s: %w", dir, err)
	}
	sv := ts.Signed.Meta["snapshot.json"]
	if sv == nil {
		return nil, nil, 0, fmt.Errorf("repository %s: timestamp.json names no snapshot", dir)
	}
	sn, err := metadata.Snapshot().FromFile(filepath.Join(md, fmt.Sprintf("%d.snapshot.json", sv.Version)))
	if err != nil {
		return nil, nil, 0, fmt.Errorf("repository %s: %w", dir, err)
	}
	tv := sn.Signed.Meta["targets.json"]
	if tv == nil {
		return nil, nil, 0, fmt.Errorf("repository %s: snapshot names no targets", dir)
	}
	return ts, sn, tv.Version, nil
}
