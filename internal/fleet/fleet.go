// Package fleet is the opt-in fleet report of the update stream: what an
// agent sends after a run (its machine, the targets it runs and their
// effective versions), the server's store of the newest report per
// machine (bbolt, an embedded database), and the page that shows which
// machines are behind and which updates run where.
package fleet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Report is what an agent posts to URL/fleet/report.
type Report struct {
	MachineID     string   `json:"machine_id"`
	Hostname      string   `json:"hostname,omitempty"`
	StreamVersion int64    `json:"stream_version"` // the stream version the agent last verified
	Targets       []Target `json:"targets"`
	Failed        int      `json:"failed"` // updates that failed in the run
	Time          string   `json:"time"`   // RFC 3339, the agent's clock
}

// Target is one target object running on the machine.
type Target struct {
	Name    string   `json:"name"`
	BuildID string   `json:"build_id,omitempty"`
	Updates []string `json:"updates"` // applied, in order
	Pids    []int    `json:"pids"`
}

// MaxReport bounds the size of a report the server accepts.
const MaxReport = 1 << 20

var machineID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// Parse decodes and checks a report.
func Parse(data []byte) (*Report, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var r Report
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("fleet report: %w", err)
	}
	if !machineID.MatchString(r.MachineID) {
		return nil, fmt.Errorf("fleet report: bad machine id %q", r.MachineID)
	}
	if len(r.Hostname) > 255 || r.StreamVersion < 0 || r.Failed < 0 || len(r.Targets) > 10000 {
		return nil, errors.New("fleet report: field out of range")
	}
	for _, t := range r.Targets {
		if t.Name == "" || len(t.Name) > 255 || len(t.BuildID) > 128 || len(t.Updates) > 10000 {
			return nil, fmt.Errorf("fleet report: bad target %q", t.Name)
		}
	}
	return &r, nil
}

// Machine is a stored report with what the server saw.
type Machine struct {
	Report
	Received string `json:"received"`
	From     string `json:"from"`
}

// Store keeps the newest report of every machine.
type Store struct{ db *bolt.DB }

var bucket = []byte("machines")

// Open opens (or creates) the store at path.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("fleet database %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("fleet database %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the store.
func (s *Store) Close() error { return s.db.Close() }

// Put records a machine's report, replacing its previous one.
func (s *Store) Put(m Machine) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put([]byte(m.MachineID), data) })
}

// All returns every machine, by machine id.
func (s *Store) All() ([]Machine, error) {
	out := []Machine{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var m Machine
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("machine %s: %w", k, err)
			}
			out = append(out, m)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].MachineID < out[j].MachineID })
	return out, err
}

// Handler serves POST /fleet/report, GET /fleet (the page) and GET
// /fleet.json. current returns the stream's version now, to tell which
// machines are behind.
func Handler(s *Store, current func() int64) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /fleet/report", func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, MaxReport)); err != nil {
			http.Error(w, "fleet report: "+err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		rep, err := Parse(buf.Bytes())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		m := Machine{Report: *rep, Received: time.Now().UTC().Format(time.RFC3339), From: r.RemoteAddr}
		if err := s.Put(m); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /fleet.json", func(w http.ResponseWriter, r *http.Request) {
		v, err := Summarise(s, current())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	})
	mux.HandleFunc("GET /fleet", func(w http.ResponseWriter, r *http.Request) {
		v, err := Summarise(s, current())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		page.Execute(w, v)
	})
	return mux
}
