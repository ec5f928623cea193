// Package fault lets tests kill livesplice at named points of apply and
// undo, to prove that a livesplice killed at any instant leaves its target
// consistent. Only a binary built with -tags faultinject can be killed;
// in every other build Point does nothing.
package fault

// Env names the environment variable holding the point to die at.
const Env = "LIVESPLICE_FAULT"
