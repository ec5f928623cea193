package objdiff

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"livesplice/internal/update"
)

// includeFlags puts the project's livesplice.h on the include path.
func includeFlags(t *testing.T) string {
	dir, err := filepath.Abs("../../include")
	if err != nil {
		t.Fatal(err)
	}
	return "-O2 -g -fPIE -idirafter " + dir
}

func TestHooksInOrder(t *testing.T) {
	flags := includeFlags(t)
	pre := compile(t, `int n; int f(void) { return n; }`, flags)
	post := compile(t, `#include <livesplice.h>
int n; int f(void) { return n; }
static int ready(void) { return n > 0; }
static void second(void) { n = 2; }
static void first(void) { n = 1; }
LIVESPLICE_PRE_APPLY(ready);
LIVESPLICE_APPLY(first);
LIVESPLICE_APPLY(second);
LIVESPLICE_POST_UNDO(f);
`, flags)
	b := NewBuilder("prog", "", "")
	if err := b.AddObject("x.o", pre, post); err != nil {
		t.Fatal(err)
	}
	if !b.Changed() {
		t.Fatal("an update of hooks only counts as no change")
	}
	tg := b.Target()
	var got []string
	for _, h := range tg.Hooks {
		got = append(got, h.Kind+":"+h.Name+":"+tg.Symbols[h.Symbol].Kind)
	}
	// New hook functions are carried; an unchanged function is the running one.
	want := "pre_apply:ready:section apply:first:section apply:second:section post_undo:f:global"
	if strings.Join(got, " ") != want {
		t.Fatalf("hooks %q, want %q", strings.Join(got, " "), want)
	}
	if replaced, _ := funcs(tg); len(replaced) != 0 {
		t.Errorf("replaced %v, want none", replaced)
	}
	// Hook sections are never carried as data.
	for _, s := range tg.Sections {
		if strings.HasPrefix(s.Name, customPrefix) {
			t.Errorf("carried %s", s.Name)
		}
	}
	f := &update.File{ID: "x", Kind: update.KindProcess, Targets: []update.Target{*tg}}
	if _, err := update.Marshal(f); err != nil {
		t.Fatalf("update does not validate: %v", err)
	}
}

func TestLayoutChange(t *testing.T) {
	flags := includeFlags(t)
	pre := compile(t, `struct conn { int fd; int n; }; int serve(struct conn *c) { return c->n++; }`, flags)
	changed := `#include <livesplice.h>
struct conn { int fd; int n; int limit; }; int serve(struct conn *c) { return c->n >= c->limit ? -1 : c->n++; }`
	b := NewBuilder("prog", "", "")
	if err := b.AddObject("x.o", pre, compile(t, changed, flags)); err != nil {
		t.Fatal(err)
	}
	err := b.LayoutErr()
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "struct conn: layout changed (size 8 -> 12 bytes; fields: +limit at 8)") ||
		!strings.Contains(err.Error(), "LIVESPLICE_LAYOUT_HANDLED(struct conn)") {
		t.Fatalf("got %v", err)
	}
	b = NewBuilder("prog", "", "")
	if err := b.AddObject("x.o", pre, compile(t, changed+"\nLIVESPLICE_LAYOUT_HANDLED(struct  conn);", flags)); err != nil {
		t.Fatal(err)
	}
	if err := b.LayoutErr(); err != nil {
		t.Fatalf("marked change refused: %v", err)
	}
}

func TestShadowReference(t *testing.T) {
	flags := includeFlags(t)
	pre := compile(t, `int f(void *p) { return p != 0; }`, flags)
	post := compile(t, `#include <livesplice.h>
int f(void *p) { return livesplice_shadow_get(p, 1) != 0; }`, flags)
	b := NewBuilder("prog", "", "")
	if err := b.AddObject("x.o", pre, post); err != nil {
		t.Fatal(err)
	}
	if !b.References("livesplice_shadow_get") || b.References("livesplice_shadow_free") {
		t.Fatal("References does not tell what the new code calls")
	}
}
