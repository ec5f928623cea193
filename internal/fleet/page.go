package fleet

import (
	"html/template"
	"sort"
	"strings"
)

// View is the fleet as the page and /fleet.json show it.
type View struct {
	StreamVersion int64         `json:"stream_version"`
	Machines      []MachineView `json:"machines"`
	Updates       []UpdateView  `json:"updates"` // which updates run where
}

// MachineView is one machine's row.
type MachineView struct {
	Machine
	Behind bool `json:"behind"` // its agent last verified an older stream version
}

// UpdateView is one update and the machines running it.
type UpdateView struct {
	ID       string   `json:"id"`
	Machines []string `json:"machines"`
}

// Summarise builds the view of every stored machine against the
// stream's current version.
func Summarise(s *Store, current int64) (View, error) {
	ms, err := s.All()
	if err != nil {
		return View{}, err
	}
	v := View{StreamVersion: current, Machines: []MachineView{}, Updates: []UpdateView{}}
	where := map[string]map[string]bool{}
	for _, m := range ms {
		v.Machines = append(v.Machines, MachineView{Machine: m, Behind: m.StreamVersion < current || m.Failed > 0})
		for _, t := range m.Targets {
			for _, u := range t.Updates {
				if where[u] == nil {
					where[u] = map[string]bool{}
				}
				where[u][m.MachineID] = true
			}
		}
	}
	for id, set := range where {
		u := UpdateView{ID: id}
		for m := range set {
			u.Machines = append(u.Machines, m)
		}
		sort.Strings(u.Machines)
		v.Updates = append(v.Updates, u)
	}
	sort.Slice(v.Updates, func(i, j int) bool { return v.Updates[i].ID < v.Updates[j].ID })
	return v, nil
}

var page = template.Must(template.New("fleet").Funcs(template.FuncMap{"join": strings.Join}).Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>livesplice fleet</title>
<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px;text-align:left}.behind{background:#fdd}</style>
</head><body>
<h1>livesplice fleet</h1>
<p>Stream version <span id="stream-version">{{.StreamVersion}}</span>, {{len .Machines}} machines.</p>
<h2>Machines</h2>
<table id="machines"><tr><th>machine</th><th>host</th><th>stream version</th><th>state</th><th>targets</th><th>last report</th></tr>
{{range .Machines}}<tr class="{{if .Behind}}behind{{end}}" data-machine="{{.MachineID}}"><td>{{.MachineID}}</td><td>{{.Hostname}}</td><td>{{.StreamVersion}}</td><td>{{if .Behind}}behind{{if .Failed}} ({{.Failed}} failed){{end}}{{else}}current{{end}}</td><td>{{range .Targets}}{{.Name}}: {{join .Updates ", "}}<br>{{end}}</td><td>{{.Received}}</td></tr>
{{end}}</table>
<h2>Updates</h2>
<table id="updates"><tr><th>update</th><th>runs on</th></tr>
{{range .Updates}}<tr data-update="{{.ID}}"><td>{{.ID}}</td><td>{{join .Machines ", "}}</td></tr>
{{end}}</table>
</body></html>
`))
