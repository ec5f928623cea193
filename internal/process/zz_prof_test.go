package process

import (
	"fmt"
	"os"
	"testing"
	"time"

	"livesplice/internal/update"
)

func TestZZProf(t *testing.T) {
	name := os.Getenv("LS_PROF_UPD")
	if name == "" {
		t.Skip()
	}
	f, err := update.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if w := os.Getenv("LS_WORKERS"); w != "" {
		fmt.Sscan(w, &fleetWorkers)
	}
	t0 := time.Now()
	outs := ApplyAll(f, Options{})
	t.Logf("apply: %v %v", time.Since(t0), len(outs))
	s, _ := Summary(outs)
	t.Log(s)
	t0 = time.Now()
	outs = UndoAll(f.ID, Options{})
	s, _ = Summary(outs)
	t.Logf("undo: %v %s", time.Since(t0), s)
}
