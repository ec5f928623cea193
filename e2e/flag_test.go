package e2e

import (
	"encoding/json"
	"os"
	"testing"
)

// One update over a program and its library, mapped far more than 2 GiB
// apart: one commit flag switches both objects, so no instant (and no
// livesplice killed at one) can run the new program with the old library.
// The test proves it by writing the flag by hand in the process it
// started: 0 runs the old code of both, 1 the new code of both.
func TestOneFlagForTwoObjects(t *testing.T) {
	needRoot(t)
	dir, upd := setup(t, "two_objects", "", "fix.patch")
	p := start(t, dir, "./prog")
	p.want("2000", "price=1800 big")
	mustRun(t, "apply", "--pid", p.pid(), upd["fix"])
	p.want("2000", "price=1600 (large)")

	var sj struct {
		Updates []struct {
			Targets []string `json:"targets"`
			Flags   []uint64 `json:"flags"`
			Running string   `json:"running"`
		} `json:"updates"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, "show", "--pid", p.pid(), "--json").stdout), &sj); err != nil || len(sj.Updates) != 1 {
		t.Fatalf("show: %v %+v", err, sj)
	}
	u := sj.Updates[0]
	if len(u.Targets) != 2 || len(u.Flags) != 1 || u.Running != "new" {
		t.Fatalf("want 2 targets under 1 flag, running new; got %+v", u)
	}
	mem, err := os.OpenFile("/proc/"+p.pid()+"/mem", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	set := func(v byte) {
		t.Helper()
		if _, err := mem.WriteAt([]byte{v}, int64(u.Flags[0])); err != nil {
			t.Fatalf("write flag: %v", err)
		}
	}
	set(0)
	p.want("2000", "price=1800 big")
	set(1)
	p.want("2000", "price=1600 (large)")
	mustRun(t, "undo", "--pid", p.pid(), "fix")
	p.want("2000", "price=1800 big")
	wantShow(t, p.pid())
}
