// Command livesplice builds rebootless updates from source patches and
// splices them into running processes and the running kernel. See README.md.
package main

import (
	"fmt"
	"os"
	"runtime/pprof"

	"livesplice/internal/build"
	"livesplice/internal/cli"
)

func main() {
	// create builds through this same binary acting as the compiler.
	if build.IsWrapperInvocation() {
		os.Exit(build.WrapperMain())
	}
	// LIVESPLICE_CPUPROFILE=FILE: a CPU profile of the command, for the
	// benchmarks' "where does the time go" (go tool pprof).
	if path := os.Getenv("LIVESPLICE_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil && pprof.StartCPUProfile(f) == nil {
			code := cli.Main(os.Args[1:], os.Stdout, os.Stderr)
			pprof.StopCPUProfile()
			f.Close()
			os.Exit(code)
		} else {
			fmt.Fprintf(os.Stderr, "livesplice: LIVESPLICE_CPUPROFILE %s: cannot profile\n", path)
		}
	}
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
