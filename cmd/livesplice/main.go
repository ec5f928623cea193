// Command livesplice builds rebootless updates from source patches and
// splices them into running processes. See README.md.
package main

import (
	"os"

	"livesplice/internal/build"
	"livesplice/internal/cli"
)

func main() {
	// create builds through this same binary acting as the compiler.
	if build.IsWrapperInvocation() {
		os.Exit(build.WrapperMain())
	}
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
