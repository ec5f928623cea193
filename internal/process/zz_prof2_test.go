package process

import (
	"os"
	"strconv"
	"testing"
	"time"

	"livesplice/internal/update"
)

func TestZZOne(t *testing.T) {
	name := os.Getenv("LS_PROF_UPD")
	pid, _ := strconv.Atoi(os.Getenv("LS_PID"))
	if name == "" || pid == 0 {
		t.Skip()
	}
	f, _ := update.ReadFile(name)
	var ta, tu time.Duration
	for i := 0; i < 30; i++ {
		t0 := time.Now()
		if err := Apply(pid, f, Options{}); err != nil {
			t.Fatal(err)
		}
		ta += time.Since(t0)
		t0 = time.Now()
		if err := Undo(pid, f.ID, Options{}); err != nil {
			t.Fatal(err)
		}
		tu += time.Since(t0)
	}
	t.Logf("apply %v undo %v", ta/30, tu/30)
}
