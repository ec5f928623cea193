package update

import "debug/elf"

// RelocWidth is the width in bytes of the field that a relocation of type t
// (an R_X86_64_* number) writes, or 0 for a type updates may not carry.
func RelocWidth(t uint32) int {
	switch elf.R_X86_64(t) {
	case elf.R_X86_64_PC32, elf.R_X86_64_PLT32, elf.R_X86_64_32, elf.R_X86_64_32S,
		elf.R_X86_64_GOTPCREL, elf.R_X86_64_GOTPCRELX, elf.R_X86_64_REX_GOTPCRELX:
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
		elf.R_X86_64_GOTPCREL, elf.R_X86_64_GOTPCRELX, elf.R_X86_64_REX_GOTPCRELX:
		return true
	}
	return false
}

// RelocIsGOT reports whether the relocation goes through a GOT slot.
func RelocIsGOT(t uint32) bool {
	switch elf.R_X86_64(t) {
	case elf.R_X86_64_GOTPCREL, elf.R_X86_64_GOTPCRELX, elf.R_X86_64_REX_GOTPCRELX:
		return true
	}
	return false
}
