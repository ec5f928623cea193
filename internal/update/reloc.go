package update

import (
	"debug/elf"
	"strings"
)

// RelocWidth is the width in bytes of the field that a relocation of type t
// (an R_X86_64_* number) writes, or 0 for a type updates may not carry.
func RelocWidth(t uint32) int {
	switch elf.R_X86_64(t) {
	case elf.R_X86_64_PC32, elf.R_X86_64_PLT32, elf.R_X86_64_32, elf.R_X86_64_32S,
		elf.R_X86_64_GOTPCREL, elf.R_X86_64_GOTPCRELX, elf.R_X86_64_REX_GOTPCRELX,
		elf.R_X86_64_TPOFF32, elf.R_X86_64_DTPOFF32, elf.R_X86_64_GOTTPOFF, elf.R_X86_64_TLSGD, elf.R_X86_64_TLSLD:
		return 4
	case elf.R_X86_64_64, elf.R_X86_64_PC64:
		return 8
	}
	return 0
}

// RelocIsPCRel reports whether the field holds an address relative to itself.
func RelocIsPCRel(t uint32) bool {
	switch elf.R_X86_64(t) {
	case elf.R_X86_64_PC32, elf.R_X86_64_PLT32, elf.R_X86_64_PC64,
		elf.R_X86_64_GOTPCREL, elf.R_X86_64_GOTPCRELX, elf.R_X86_64_REX_GOTPCRELX,
		elf.R_X86_64_GOTTPOFF, elf.R_X86_64_TLSGD, elf.R_X86_64_TLSLD:
		return true
	}
	return false
}

// TLSClass names how a relocation reaches a thread-local variable, or ""
// for other relocations. A thread-local variable's symbol in an update has
// Type "tls-" + class, one symbol per class: the value run-pre matching
// learns for it, and apply writes, is the class's own:
//
//	tpoff     (R_X86_64_TPOFF32, local exec)   its offset from the thread pointer
//	dtpoff    (R_X86_64_DTPOFF32)               its offset in its module's TLS block
//	gottpoff  (R_X86_64_GOTTPOFF, initial exec) its offset from the thread pointer, which
//	                                            new code reads from a GOT slot of the update
//	tlsgd     (R_X86_64_TLSGD, general dynamic) the address of the running object's GOT pair
//	tlsld     (R_X86_64_TLSLD, local dynamic)   the address of the running object's GOT pair
func TLSClass(t uint32) string {
	switch elf.R_X86_64(t) {
	case elf.R_X86_64_TPOFF32:
		return "tpoff"
	case elf.R_X86_64_DTPOFF32:
		return "dtpoff"
	case elf.R_X86_64_GOTTPOFF:
		return "gottpoff"
	case elf.R_X86_64_TLSGD:
		return "tlsgd"
	case elf.R_X86_64_TLSLD:
		return "tlsld"
	}
	return ""
}

// IsTLS reports whether y stands for a thread-local variable (TLSClass).
func (y Symbol) IsTLS() bool { return strings.HasPrefix(y.Type, "tls-") }

// RelocIsGOT reports whether the relocation goes through a GOT slot.
func RelocIsGOT(t uint32) bool {
	switch elf.R_X86_64(t) {
	case elf.R_X86_64_GOTPCREL, elf.R_X86_64_GOTPCRELX, elf.R_X86_64_REX_GOTPCRELX, elf.R_X86_64_GOTTPOFF:
		return true
	}
	return false
}
