package fleet

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

func TestReportsAndPage(t *testing.T) {
	st, err := Open(filepath.Join(t.TempDir(), "fleet.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ts := httptest.NewServer(Handler(st, func() int64 { return 3 }))
	defer ts.Close()
	post := func(body string) int {
		res, err := http.Post(ts.URL+"/fleet/report", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, body := range []string{
		`{"machine_id":"m1","hostname":"web1","stream_version":3,"targets":[{"name":"nginx","updates":["fix-1","fix-2"],"pids":[10]}],"failed":0,"time":"x"}`,
		`{"machine_id":"m2","stream_version":2,"targets":[{"name":"nginx","updates":["fix-1"],"pids":[11]}],"failed":0,"time":"x"}`,
		`{"machine_id":"m2","stream_version":2,"targets":[{"name":"nginx","updates":["fix-1"],"pids":[12]}],"failed":1,"time":"x"}`,
	} {
		if code := post(body); code != http.StatusNoContent {
			t.Fatalf("post: %d", code)
		}
	}
	for _, bad := range []string{`{"machine_id":"../x","targets":[]}`, `{"machine_id":"m3","extra":1}`, `not json`} {
		if code := post(bad); code != http.StatusBadRequest {
			t.Errorf("post %q: %d", bad, code)
		}
	}
	res, err := http.Get(ts.URL + "/fleet.json")
	if err != nil {
		t.Fatal(err)
	}
	var v View
	json.NewDecoder(res.Body).Decode(&v)
	res.Body.Close()
	if len(v.Machines) != 2 || v.Machines[0].Behind || !v.Machines[1].Behind || v.Machines[1].Targets[0].Pids[0] != 12 {
		t.Fatalf("machines: %+v", v.Machines)
	}
	if len(v.Updates) != 2 || v.Updates[0].ID != "fix-1" || strings.Join(v.Updates[0].Machines, ",") != "m1,m2" || strings.Join(v.Updates[1].Machines, ",") != "m1" {
		t.Fatalf("updates: %+v", v.Updates)
	}
	res, err = http.Get(ts.URL + "/fleet")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{`<tr class="behind" data-machine="m2">`, `data-machine="m1"`, `<td>fix-2</td><td>m1</td>`, `(1 failed)`} {
		if !strings.Contains(string(page), want) {
			t.Errorf("page lacks %q:\n%s", want, page)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"machine_id":"m1","stream_version":3,"targets":[{"name":"nginx","updates":["a"],"pids":[1]}],"failed":0,"time":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Parse(data)
		if err == nil && !machineID.MatchString(r.MachineID) {
			t.Fatalf("accepted machine id %q", r.MachineID)
		}
	})
}
