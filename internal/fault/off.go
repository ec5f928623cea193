//go:build !faultinject

package fault

// Enabled reports whether this build can be killed at points.
const Enabled = false

// Point does nothing outside fault-injection builds.
func Point(string) {}
