package procevents

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// A process this test starts is reported by its exec event.
func TestExecEvent(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the process connector needs root")
	}
	l, err := Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	want := cmd.Process.Pid
	cmd.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		ev, err := l.Next(ctx)
		if err == ErrOverrun {
			continue
		}
		if err != nil {
			t.Fatalf("no exec event for pid %d: %v", want, err)
		}
		if ev.Tgid == want {
			if ev.Pid != want {
				t.Fatalf("exec event of %d names thread %d", want, ev.Pid)
			}
			return
		}
	}
}

func TestParseExecRejectsShortAndOtherEvents(t *testing.T) {
	if _, ok := parseExec(make([]byte, 10)); ok {
		t.Fatal("short message parsed")
	}
	b := make([]byte, cnMsgSize+procEventHdrSize+execEventBodySize)
	b[0], b[4] = cnIdxProc, cnValProc
	b[cnMsgSize] = 1 // PROC_EVENT_FORK
	if _, ok := parseExec(b); ok {
		t.Fatal("fork event parsed as exec")
	}
	b[cnMsgSize] = procEventExec
	b[cnMsgSize+procEventHdrSize] = 42
	b[cnMsgSize+procEventHdrSize+4] = 42
	if ev, ok := parseExec(b); !ok || ev.Pid != 42 || ev.Tgid != 42 {
		t.Fatalf("exec event: %+v %v", ev, ok)
	}
}
