package kernel

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"livesplice/internal/update"
)

// Addresses of the test kernel (see kallsymsForMatch).
const (
	fnAddr     = 0xffffffff812a96d0
	fentry     = 0xffffffff81001000
	seqPuts    = 0xffffffff81300000
	seqPutc    = 0xffffffff81300100
	retThunk   = 0xffffffff81002000
	srsoThunk  = 0xffffffff81002100
	thunkRax   = 0xffffffff81002200
	savedCmd   = 0xffffffff82800000
	ftraceTram = 0xffffffffc0201000
)

const kallsymsForMatch = `ffffffff81001000 T __fentry__
ffffffff81002000 T __x86_return_thunk
ffffffff81002100 T srso_return_thunk
ffffffff81002200 T __x86_indirect_thunk_array
ffffffff81002200 T __x86_indirect_thunk_rax
ffffffff81002220 T __x86_indirect_thunk_rcx
ffffffff81002360 T __x86_indirect_thunk_r11
ffffffff81002400 T __x86_indirect_its_thunk_array
ffffffff81002420 T __x86_indirect_its_thunk_rax
ffffffff81002440 T __x86_indirect_its_thunk_rcx
ffffffff812a96d0 t cmdline_proc_show
ffffffff81300000 T seq_puts
ffffffff81300100 T seq_putc
ffffffff82800000 D saved_command_line
ffffffffc0201000 t ftrace_trampoline	[__builtin__ftrace]
`

var matchSyms = []update.Symbol{
	{Kind: update.SymGlobal, Name: "__fentry__"},               // 0
	{Kind: update.SymGlobal, Name: "saved_command_line"},       // 1
	{Kind: update.SymGlobal, Name: "seq_puts"},                 // 2
	{Kind: update.SymGlobal, Name: "seq_putc"},                 // 3
	{Kind: update.SymGlobal, Name: "__x86_return_thunk"},       // 4
	{Kind: update.SymLocal, Name: "cmdline_proc_show"},         // 5
	{Kind: update.SymGlobal, Name: "__x86_indirect_thunk_rax"}, // 6
	{Kind: update.SymGlobal, Name: "__x86_indirect_thunk_r11"}, // 7
}

// preCmdline is cmdline_proc_show of Debian's 6.1 as gcc 12 compiles it.
func preCmdline() *update.Code {
	return &update.Code{
		Data: []byte{
			0xe8, 0, 0, 0, 0, // call __fentry__
			0x53,                         // push %rbx
			0x48, 0x8b, 0x35, 0, 0, 0, 0, // mov saved_command_line(%rip),%rsi
			0x48, 0x89, 0xfb, // mov %rdi,%rbx
			0xe8, 0, 0, 0, 0, // call seq_puts
			0x48, 0x89, 0xdf, // mov %rbx,%rdi
			0xbe, 0x0a, 0, 0, 0, // mov $0xa,%esi
			0xe8, 0, 0, 0, 0, // call seq_putc
			0x31, 0xc0, // xor %eax,%eax
			0x5b,             // pop %rbx
			0xe9, 0, 0, 0, 0, // jmp __x86_return_thunk
		},
		Relocs: []update.Reloc{
			{Offset: 0x1, Type: 4, Symbol: 0, Addend: -4},
			{Offset: 0x9, Type: 2, Symbol: 1, Addend: -4},
			{Offset: 0x11, Type: 4, Symbol: 2, Addend: -4},
			{Offset: 0x1e, Type: 4, Symbol: 3, Addend: -4},
			{Offset: 0x26, Type: 4, Symbol: 4, Addend: -4},
		},
	}
}

// runningCmdline is how the kernel runs it: relocations resolved, the
// fentry call a nop, the return thunk jump a ret.
func runningCmdline() []byte {
	b := bytes.Clone(preCmdline().Data)
	copy(b[0:], []byte{0x0f, 0x1f, 0x44, 0, 0})
	put := func(off int, to uint64) {
		binary.LittleEndian.PutUint32(b[off:], uint32(int32(int64(to)-int64(fnAddr+uint64(off)+4))))
	}
	put(0x9, savedCmd)
	put(0x11, seqPuts)
	put(0x1e, seqPutc)
	copy(b[0x25:], []byte{0xc3, 0xcc, 0xcc, 0xcc, 0xcc})
	return b
}

func newMatcher(t *testing.T) *matcher {
	t.Helper()
	ks, err := ParseKallsyms(strings.NewReader(kallsymsForMatch))
	if err != nil {
		t.Fatal(err)
	}
	return &matcher{ks: ks, syms: matchSyms, known: map[int]uint64{}}
}

func rel32(b []byte, at int, to uint64) {
	binary.LittleEndian.PutUint32(b[at+1:], uint32(int32(int64(to)-int64(fnAddr+uint64(at)+5))))
}

func TestMatchBootRewrites(t *testing.T) {
	m := newMatcher(t)
	cases := map[string]func(b []byte){
		"nop fentry, ret":            func(b []byte) {},
		"traced: call to trampoline": func(b []byte) { b[0] = 0xe8; rel32(b, 0, ftraceTram) },
		"return thunk kept":          func(b []byte) { b[0x25] = 0xe9; rel32(b, 0x25, retThunk) },
		"return thunk srso":          func(b []byte) { b[0x25] = 0xe9; rel32(b, 0x25, srsoThunk) },
	}
	for name, edit := range cases {
		run := runningCmdline()
		edit(run)
		if _, err := m.match(preCmdline(), fnAddr, run); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestMatchRefuses(t *testing.T) {
	m := newMatcher(t)
	cases := map[string]struct {
		edit func(b []byte)
		want string
	}{
		"immediate":         {func(b []byte) { b[0x19] = 0x0b }, "code differs at +0x19"},
		"other callee":      {func(b []byte) { rel32(b, 0x10, seqPutc) }, "refers to seq_putc+0x0 where the update expects seq_puts"},
		"other data":        {func(b []byte) { binary.LittleEndian.PutUint32(b[9:], 0) }, "where the update expects saved_command_line"},
		"return thunk junk": {func(b []byte) { b[0x25] = 0x90 }, "return thunk"},
		"fentry junk":       {func(b []byte) { b[0] = 0x90 }, "ftrace site"},
	}
	for name, c := range cases {
		run := runningCmdline()
		c.edit(run)
		_, err := m.match(preCmdline(), fnAddr, run)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
	if _, err := m.match(preCmdline(), fnAddr, runningCmdline()[:10]); err == nil {
		t.Error("short running code matched")
	}
}

func TestMatchPatchedPlaces(t *testing.T) {
	m := newMatcher(t)
	for _, c := range []struct {
		name     string
		pre, run []byte
		ok       bool
	}{
		{"static key off->on", []byte{0x0f, 0x1f, 0x44, 0, 0, 0xc3}, []byte{0xe9, 1, 0, 0, 0, 0xc3}, true},
		{"static key jmp8->nop2", []byte{0xeb, 0x01, 0xc3, 0xc3}, []byte{0x66, 0x90, 0xc3, 0xc3}, true},
		{"alternative nops -> lfence", []byte{0x0f, 0x1f, 0x00, 0xc3}, []byte{0x0f, 0xae, 0xe8, 0xc3}, true},
		{"alternative nops -> clac", []byte{0x90, 0x90, 0x90, 0xc3}, []byte{0x0f, 0x01, 0xca, 0xc3}, true},
		{"nop -> other instruction", []byte{0x0f, 0x1f, 0x00, 0xc3}, []byte{0x48, 0x89, 0xc7, 0xc3}, false},
		{"stretch past an instruction boundary", []byte{0x90, 0x48, 0x89, 0xc7}, []byte{0x66, 0x90, 0x89, 0xc7}, false},
	} {
		_, err := m.match(&update.Code{Data: c.pre}, fnAddr, c.run)
		if (err == nil) != c.ok {
			t.Errorf("%s: err = %v", c.name, err)
		}
	}
}

// TestMatchRetpoline: every form apply_retpolines of 6.1 stable leaves a
// `call/jmp/jcc __x86_indirect_thunk_REG` in, and nothing else. kallsyms
// lists __x86_indirect_thunk_array at the address of the rax thunk, as the
// running kernel does.
func TestMatchRetpoline(t *testing.T) {
	const (
		itsRax  = 0xffffffff81002420
		itsRcx  = 0xffffffff81002440
		dynRax  = 0xffffffffc0300020 // a thunk ITS allocated in module space
		dynR11  = 0xffffffffc0300060
		thunkRc = 0xffffffff81002220
	)
	m := newMatcher(t)
	mem := map[uint64][]byte{dynRax: {0xff, 0xe0, 0xcc}, dynR11: {0x41, 0xff, 0xe3, 0xcc}}
	m.read = func(a uint64, b []byte) error {
		copy(b, mem[a])
		return nil
	}
	site := func(b ...byte) []byte { return append(b, 0xc3) }
	to := func(b []byte, at int, dest uint64) []byte { rel32(b, at, dest); return b }
	cases := []struct {
		name string
		pre  []byte
		sym  int
		run  []byte
		ok   bool
	}{
		{"call kept", site(0xe8, 0, 0, 0, 0), 6, to(site(0xe8, 0, 0, 0, 0), 0, thunkRax), true},
		{"call *%rax; nop3", site(0xe8, 0, 0, 0, 0), 6, site(0xff, 0xd0, 0x0f, 0x1f, 0x00), true},
		{"call *%rax; nop; nop; nop", site(0xe8, 0, 0, 0, 0), 6, site(0xff, 0xd0, 0x90, 0x90, 0x90), true},
		{"lfence; call *%rax", site(0xe8, 0, 0, 0, 0), 6, site(0x0f, 0xae, 0xe8, 0xff, 0xd0), true},
		{"call its thunk", site(0xe8, 0, 0, 0, 0), 6, to(site(0xe8, 0, 0, 0, 0), 0, itsRax), true},
		{"call allocated its thunk", site(0xe8, 0, 0, 0, 0), 6, to(site(0xe8, 0, 0, 0, 0), 0, dynRax), true},
		{"jmp *%r11; int3; nop", site(0xe9, 0, 0, 0, 0), 7, site(0x41, 0xff, 0xe3, 0xcc, 0x90), true},
		{"lfence; jmp *%r11 (no room for int3)", site(0xe9, 0, 0, 0, 0), 7, site(0x0f, 0xae, 0xe8, 0x41, 0xff, 0xe3)[:5:5], false},
		{"jmp allocated its thunk r11", site(0xe9, 0, 0, 0, 0), 7, to(site(0xe9, 0, 0, 0, 0), 0, dynR11), true},
		{"cs call kept", site(0x2e, 0xe8, 0, 0, 0, 0), 6, to(site(0x2e, 0xe8, 0, 0, 0, 0), 1, thunkRax), true},
		{"jne -> je.d8; jmp *%rax; int3; nop", site(0x0f, 0x85, 0, 0, 0, 0), 6, site(0x74, 0x04, 0xff, 0xe0, 0xcc, 0x90), true},
		{"jne -> je.d8; lfence; jmp *%rax", site(0x0f, 0x85, 0, 0, 0, 0), 6, site(0x74, 0x04, 0x0f, 0xae, 0xe8, 0xff), false},
		{"jne kept", site(0x0f, 0x85, 0, 0, 0, 0), 6, to(site(0x0f, 0x85, 0, 0, 0, 0), 1, thunkRax), true},
		{"jne its", site(0x0f, 0x85, 0, 0, 0, 0), 6, to(site(0x0f, 0x85, 0, 0, 0, 0), 1, itsRax), true},

		{"call *%rcx for rax", site(0xe8, 0, 0, 0, 0), 6, site(0xff, 0xd1, 0x0f, 0x1f, 0x00), false},
		{"jmp *%rax for a call", site(0xe8, 0, 0, 0, 0), 6, site(0xff, 0xe0, 0xcc, 0x66, 0x90), false},
		{"call the rcx thunk", site(0xe8, 0, 0, 0, 0), 6, to(site(0xe8, 0, 0, 0, 0), 0, thunkRc), false},
		{"call the rcx its thunk", site(0xe8, 0, 0, 0, 0), 6, to(site(0xe8, 0, 0, 0, 0), 0, itsRcx), false},
		{"jmp for a call", site(0xe8, 0, 0, 0, 0), 6, to(site(0xe9, 0, 0, 0, 0), 0, thunkRax), false},
		{"call of code that is no thunk", site(0xe8, 0, 0, 0, 0), 6, to(site(0xe8, 0, 0, 0, 0), 0, dynR11), false},
		{"jne -> jne.d8", site(0x0f, 0x85, 0, 0, 0, 0), 6, site(0x75, 0x04, 0xff, 0xe0, 0xcc, 0x90), false},
		{"a mov", site(0xe8, 0, 0, 0, 0), 6, site(0x48, 0x89, 0xc7, 0x90, 0x90), false},
	}
	for _, c := range cases {
		off := uint64(len(c.pre) - 5)
		pre := &update.Code{Data: c.pre, Relocs: []update.Reloc{{Offset: off, Type: 4, Symbol: c.sym, Addend: -4}}}
		if len(c.run) < len(c.pre) {
			c.run = append(c.run, make([]byte, len(c.pre)-len(c.run))...)
			c.run[len(c.run)-1] = 0xc3
		}
		_, err := m.match(pre, fnAddr, c.run)
		if (err == nil) != c.ok {
			t.Errorf("%s: err = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

func TestMatchLearnsStatics(t *testing.T) {
	m := newMatcher(t)
	pre := &update.Code{Data: []byte{0xe8, 0, 0, 0, 0, 0xc3}, Relocs: []update.Reloc{{Offset: 1, Type: 4, Symbol: 5, Addend: -4}}}
	run := []byte{0xe8, 0, 0, 0, 0, 0xc3}
	rel32(run, 0, fnAddr)
	learned, err := m.match(pre, fnAddr, run)
	if err != nil || learned[5] != fnAddr {
		t.Fatalf("learned %v, %v", learned, err)
	}
	rel32(run, 0, seqPuts) // not where kallsyms has cmdline_proc_show
	if _, err := m.match(pre, fnAddr, run); err == nil {
		t.Error("a static at the wrong address matched")
	}
}

// FuzzMatch: no running code, however odd, makes the matcher fail other
// than with an error.
func FuzzMatch(f *testing.F) {
	f.Add(preCmdline().Data, runningCmdline(), uint8(0x11), uint8(4), uint8(2))
	f.Add([]byte{0x0f, 0x1f, 0x00, 0xc3}, []byte{0x0f, 0xae, 0xe8, 0xc3}, uint8(0), uint8(0), uint8(0))
	f.Fuzz(func(t *testing.T, pre, run []byte, off, typ, sym uint8) {
		m := newMatcher(t)
		code := &update.Code{Data: pre}
		r := update.Reloc{Offset: uint64(off), Type: uint32(typ), Symbol: int(sym) % len(matchSyms), Addend: -4}
		if w := update.RelocWidth(r.Type); w > 0 && int(off)+w <= len(pre) {
			code.Relocs = []update.Reloc{r}
		}
		_, _ = m.match(code, fnAddr, run)
	})
}

// TestMatchRodata: read-only data create pinned (a string the pre code
// passes by `mov $str,%rdi` and by `lea str(%rip)`) must be the running
// kernel's bytes at the place the running instruction refers to.
func TestMatchRodata(t *testing.T) {
	const strAddr = 0xffffffff82000010 // where the running kernel has the string
	m := newMatcher(t)
	syms := append(append([]update.Symbol(nil), matchSyms...), update.Symbol{Kind: update.SymSection, Section: 0})
	m.syms = syms
	m.secs = []update.Section{{Name: ".rodata.str1.1", Kind: update.KindRodata, Data: []byte("xx\x00%lu.%02lu %u/%d\n\x00")}}
	mem := map[uint64]byte{}
	put := func(s string) {
		for i := range s {
			mem[strAddr+uint64(i)] = s[i]
		}
	}
	m.read = func(a uint64, b []byte) error {
		for i := range b {
			b[i] = mem[a+uint64(i)]
		}
		return nil
	}
	self := len(syms) - 1
	// mov $str,%rdi (R_X86_64_32S, addend: place 3 in the section); lea str(%rip),%rsi (PC32, -4).
	pre := &update.Code{Data: []byte{0x48, 0xc7, 0xc7, 0, 0, 0, 0, 0x48, 0x8d, 0x35, 0, 0, 0, 0, 0xc3},
		Relocs: []update.Reloc{{Offset: 3, Type: 11, Symbol: self, Addend: 3}, {Offset: 10, Type: 2, Symbol: self, Addend: 3 - 4}}}
	run := bytes.Clone(pre.Data)
	var str, fn uint64 = strAddr, fnAddr
	binary.LittleEndian.PutUint32(run[3:], uint32(str))
	binary.LittleEndian.PutUint32(run[10:], uint32(str-(fn+14)))
	put("%lu.%02lu %u/%d\n\x00")
	if _, err := m.match(pre, fnAddr, run); err != nil {
		t.Fatalf("same string: %v", err)
	}
	put("%lu.%02lu %u/%d \x00")
	_, err := m.match(pre, fnAddr, run)
	if err == nil || !strings.Contains(err.Error(), "read-only data") {
		t.Fatalf("a different string matched: %v", err)
	}
}

func TestCPUHasSite(t *testing.T) {
	const site, lo, hi = 0x1010, 0x1000, 0x1100
	for _, c := range []struct {
		b  []byte
		ok bool
	}{
		{[]byte{0x0f, 0x1f, 0x44, 0x00, 0x00}, true},  // nop5: the feature is there
		{[]byte{0xeb, 0x20, 0x66, 0x66, 0x90}, true},  // jmp to t_no inside the function
		{[]byte{0xe9, 0x00, 0x10, 0x00, 0x00}, false}, // jmp out of the function
		{[]byte{0x90, 0x90, 0xeb, 0x00, 0x90}, false}, // jmp not first
		{[]byte{0x48, 0x89, 0xc7, 0x90, 0x90}, false}, // a mov
	} {
		if got := cpuHasSite(c.b, site, lo, hi); got != c.ok {
			t.Errorf("% x: %v, want %v", c.b, got, c.ok)
		}
	}
}

// TestStaticPositions: a static the pre code calls, whose name two
// symbols of vmlinux share, gets the position of the one run-pre found.
func TestStaticPositions(t *testing.T) {
	ks, err := ParseKallsyms(strings.NewReader("ffffffff81000100 t helper.constprop.0\nffffffff81000200 t helper.constprop.0\nffffffff81000300 t single\nffffffff81000400 t helper.constprop.0\t[mod]\n"))
	if err != nil {
		t.Fatal(err)
	}
	tg := &update.Target{Path: "vmlinux", Symbols: []update.Symbol{{Kind: update.SymLocal, Name: "helper.constprop.0"}, {Kind: update.SymLocal, Name: "single"}}}
	got := staticPositions(ks, tg, "", map[int]uint64{0: 0xffffffff81000200, 1: 0xffffffff81000300})
	if len(got) != 1 || got[0] != (PatchedFunc{Object: "vmlinux", Name: "helper.constprop.0", Sympos: 2}) {
		t.Fatalf("positions %+v", got)
	}
}
