//go:build faultinject

package fault

import (
	"os"
	"syscall"
)

// Enabled reports whether this build can be killed at points.
const Enabled = true

// Point kills the process with SIGKILL if LIVESPLICE_FAULT names this point.
func Point(name string) {
	if os.Getenv(Env) == name {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL cannot be caught; never go on
	}
}
