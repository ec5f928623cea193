package klp

import "testing"

// FuzzModule: the module readers and rewriters never panic, whatever the bytes.
func FuzzModule(f *testing.F) {
	obj := compile(f, with(`EXTRA=printk("x");`)...)
	r, err := Build([]Unit{{Rel: "fs/unit.o", Object: "vmlinux", Pre: compile(f, base...), Post: obj}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	fixed, err := FixModule(r.Object)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(obj)
	f.Add(r.Object)
	f.Add(fixed)
	f.Fuzz(func(t *testing.T, b []byte) {
		FixModule(b)
		Funcs(b)
		SetSymbolSympos(b, "vmlinux", "hidden_counter", 1)
		SetFuncSympos(b, "vmlinux", "show", 1)
		neutralize(b)
	})
}
