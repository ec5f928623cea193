package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Defaults of the machine-wide settings.
const (
	DefaultConfig = "/etc/livesplice/livesplice.conf"
	DefaultTrust  = "/etc/livesplice/root.json"
	DefaultState  = "/var/lib/livesplice"
)

// Config is the agent's configuration file: `key = value` lines, `#`
// comments, blank lines ignored (docs/stream.md).
type Config struct {
	Repo            string // repo: URL of the update stream
	Trust           string // trust: the pinned root metadata
	State           string // state: the agent's cache and records
	AutoInstall     bool   // auto_install: scheduled runs apply (else they only fetch and verify)
	InstallOnReboot bool   // install_on_reboot: the boot unit re-applies the cached set
	Report          bool   // report: post the fleet report to the stream's server after a run (opt-in)
	MachineID       string // machine_id: the id reported (default: /etc/machine-id)
}

// DefaultSettings is the configuration without a file.
func DefaultSettings() Config {
	return Config{Trust: DefaultTrust, State: DefaultState, AutoInstall: true, InstallOnReboot: true}
}

// LoadConfig reads a configuration file over the defaults. A missing file
// is the defaults unless mustExist (the user named it).
func LoadConfig(path string, mustExist bool) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && !mustExist {
			return DefaultSettings(), nil
		}
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses a configuration over the defaults; unknown keys and
// malformed lines are errors, so that a typo does not silently keep a
// default.
func ParseConfig(data []byte) (Config, error) {
	c := DefaultSettings()
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return Config{}, fmt.Errorf("line %d: want key = value", n)
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		var err error
		switch key {
		case "repo":
			c.Repo = val
		case "trust":
			c.Trust = val
		case "state":
			c.State = val
		case "auto_install":
			c.AutoInstall, err = parseBool(val)
		case "install_on_reboot":
			c.InstallOnReboot, err = parseBool(val)
		case "report":
			c.Report, err = parseBool(val)
		case "machine_id":
			c.MachineID = val
		default:
			return Config{}, fmt.Errorf("line %d: unknown key %q", n, key)
		}
		if err != nil {
			return Config{}, fmt.Errorf("line %d: %s: %w", n, key, err)
		}
		if (key == "trust" || key == "state") && val == "" {
			return Config{}, fmt.Errorf("line %d: %s: empty path", n, key)
		}
	}
	if err := sc.Err(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "yes", "true", "on", "1":
		return true, nil
	case "no", "false", "off", "0":
		return false, nil
	}
	return false, fmt.Errorf("want yes or no, got %q", s)
}
