package process

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"livesplice/internal/ptrace"
	"livesplice/internal/state"
	"livesplice/internal/target"
	"livesplice/internal/update"
)

// ErrHook is wrapped by HookError: custom code of the update vetoed the
// operation, crashed, or did not return in time.
var ErrHook = target.Mark(target.ErrHook, "hook failed")

// HookError is a hook that vetoed or failed.
type HookError struct {
	Kind, Name string
	Addr       uint64 // the hook's address in the target
	Ret        int32  // a veto's return value
	Err        error  // nil for a veto
	Timeout    time.Duration
}

func (e *HookError) Error() string {
	switch {
	case e.Err == nil:
		return fmt.Sprintf("%s hook %s vetoed it (returned %d)", e.Kind, e.Name, e.Ret)
	case errors.Is(e.Err, ptrace.ErrTimeout):
		return fmt.Sprintf("%s hook %s did not return within %v (it was interrupted; it may have left a lock held or its work half done)", e.Kind, e.Name, e.Timeout)
	}
	var fe *ptrace.FaultError
	if errors.As(e.Err, &fe) {
		where := fmt.Sprintf("pc %#x", fe.PC)
		if fe.PC >= e.Addr && fe.PC-e.Addr < 1<<20 {
			where = fmt.Sprintf("%s+%#x", e.Name, fe.PC-e.Addr)
		}
		return fmt.Sprintf("%s hook %s crashed: %s (fault address %#x) at %s", e.Kind, e.Name, unix.SignalName(fe.Signal), fe.Addr, where)
	}
	return fmt.Sprintf("%s hook %s failed: %v", e.Kind, e.Name, e.Err)
}

// Is lets errors.Is(err, ErrHook) match, and so every kind ErrHook is.
func (e *HookError) Is(t error) bool { return errors.Is(ErrHook, t) }

// Unwrap gives the call's own error.
func (e *HookError) Unwrap() error { return e.Err }

// hookTimeout bounds each hook call.
func (o Options) hookTimeout() time.Duration {
	if o.HookTimeout <= 0 {
		return 5 * time.Second
	}
	return o.HookTimeout
}

// hooksOf returns the hooks of one kind, in order.
func hooksOf(hooks []state.Hook, kind string) []state.Hook {
	var out []state.Hook
	for _, h := range hooks {
		if h.Kind == kind {
			out = append(out, h)
		}
	}
	return out
}

// callHooks calls the hooks of kind in order on a stopped thread of the
// target (the others stay as they are: stopped, or running for the POST
// hooks). A vetoing kind stops at the first non-zero return.
func (s *session) callHooks(hooks []state.Hook, kind string) error {
	for _, h := range hooksOf(hooks, kind) {
		s.opt.logf("calling %s hook %s at %#x", kind, h.Name, h.Addr)
		rax, err := s.p.Call(h.Addr, s.opt.hookTimeout())
		if err != nil {
			return &HookError{Kind: kind, Name: h.Name, Addr: h.Addr, Err: err, Timeout: s.opt.hookTimeout()}
		}
		if update.HookVetoes(kind) && int32(rax) != 0 {
			return &HookError{Kind: kind, Name: h.Name, Ret: int32(rax)}
		}
	}
	return nil
}

// failHooks calls the FAIL hooks of an abandoned operation with every
// thread stopped; their own failure is only logged (the operation failed
// already, and says why).
func (s *session) failHooks(hooks []state.Hook, kind string) {
	if len(hooksOf(hooks, kind)) == 0 {
		return
	}
	if err := s.stopWorld(); err != nil {
		s.opt.logf("%s hooks not called: %v", kind, err)
		return
	}
	if err := s.callHooks(hooks, kind); err != nil {
		s.opt.logf("%v", err)
	}
}

// preHooks calls the PRE hooks of kind with every thread stopped, then
// lets the process run on while livesplice prepares the rest.
func (s *session) preHooks(hooks []state.Hook, kind string) error {
	if len(hooksOf(hooks, kind)) == 0 {
		return nil
	}
	if err := s.stopWorld(); err != nil {
		return err
	}
	err := s.callHooks(hooks, kind)
	if rerr := s.p.ResumeExcept(s.worker); rerr != nil && err == nil {
		err = fmt.Errorf("resume after %s hooks: %w", kind, rerr)
	}
	return err
}

// postHooks calls the POST hooks of kind with the process running again
// (only the thread they run on is stopped).
func (s *session) postHooks(hooks []state.Hook, kind string) error {
	if len(hooksOf(hooks, kind)) == 0 {
		return nil
	}
	if err := s.p.ResumeExcept(s.worker); err != nil {
		return fmt.Errorf("resume before %s hooks: %w", kind, err)
	}
	return s.callHooks(hooks, kind)
}
