// Package include holds what update authors' C code is built against:
// livesplice.h (hooks, shadow variables, layout-change markers) and the
// shadow-variable runtime that create compiles into updates that use it.
// Both are embedded in the livesplice binary (docs/custom-code.md).
package include

import _ "embed"

// Header is livesplice.h.
//
//go:embed livesplice.h
var Header []byte

// ShadowRuntime is the C source of the livesplice_shadow_* functions.
//
//go:embed runtime/livesplice_shadow.c
var ShadowRuntime []byte

// HeaderName and ShadowRuntimeName are the files' names.
const (
	HeaderName        = "livesplice.h"
	ShadowRuntimeName = "livesplice_shadow.c"
)
