package kernel

import "testing"

func FuzzNewFuncs(f *testing.F) {
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	f.Fuzz(func(t *testing.T, ko []byte) {
		_, _ = NewFuncs(ko, map[string]bool{"cmdline_proc_show": true})
	})
}
