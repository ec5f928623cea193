package build

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// arMember is one member of an ar archive. For a thin archive Name is the
// path of the member file (relative to the archive's directory unless
// absolute) and Data is nil.
type arMember struct {
	Name string
	Data []byte
}

// parseArchive reads the members of an ar archive in GNU (SysV, with a "//"
// long-name table and "/N" references) or BSD ("#1/N" names stored in front
// of the data) format, or a GNU thin archive. Symbol tables and the
// long-name table itself are not members.
func parseArchive(b []byte) (members []arMember, thin bool, err error) {
	switch {
	case bytes.HasPrefix(b, arMagic):
	case bytes.HasPrefix(b, thinMagic):
		thin = true
	default:
		return nil, false, errors.New("not an ar archive")
	}
	const hdrLen = 60
	var longNames []byte
	off := len(arMagic)
	for off < len(b) {
		if off+hdrLen > len(b) {
			return nil, thin, fmt.Errorf("truncated member header at %d", off)
		}
		h := b[off : off+hdrLen]
		if string(h[58:60]) != "`\n" {
			return nil, thin, fmt.Errorf("bad member header at %d", off)
		}
		rawName := strings.TrimRight(string(h[0:16]), " ")
		size, err := strconv.ParseInt(strings.TrimSpace(string(h[48:58])), 10, 64)
		if err != nil || size < 0 {
			return nil, thin, fmt.Errorf("bad member size at %d", off)
		}
		off += hdrLen
		// Thin archives store only the symbol and long-name tables; regular
		// members' sizes describe the external file.
		special := rawName == "/" || rawName == "//" || rawName == "/SYM64/" ||
			rawName == "__.SYMDEF" || rawName == "__.SYMDEF SORTED" ||
			strings.HasPrefix(rawName, "#1/__.SYMDEF")
		stored := !thin || special
		var data []byte
		if stored {
			if int64(len(b)-off) < size {
				return nil, thin, fmt.Errorf("truncated member %q", rawName)
			}
			data = b[off : off+int(size)]
		}
		next := off
		if stored {
			next += int(size)
			next += next % 2 // members are 2-byte aligned
		}
		name := rawName
		switch {
		case rawName == "//":
			longNames = data
			name = ""
		case special:
			name = ""
		case strings.HasPrefix(rawName, "#1/"):
			n, err := strconv.Atoi(rawName[3:])
			if err != nil || n < 0 || n > len(data) {
				return nil, thin, fmt.Errorf("bad BSD long name %q", rawName)
			}
			name = strings.TrimRight(string(data[:n]), "\x00")
			data = data[n:]
		case strings.HasPrefix(rawName, "/") && len(rawName) > 1:
			i, err := strconv.Atoi(rawName[1:])
			if err != nil || i < 0 || i >= len(longNames) {
				return nil, thin, fmt.Errorf("bad long name reference %q", rawName)
			}
			s := longNames[i:]
			if j := bytes.IndexByte(s, '\n'); j >= 0 {
				s = s[:j]
			}
			name = strings.TrimSuffix(string(s), "/")
		default:
			name = strings.TrimSuffix(rawName, "/")
		}
		if name != "" {
			if thin {
				data = nil
			}
			members = append(members, arMember{Name: name, Data: data})
		}
		off = next
	}
	return members, thin, nil
}
