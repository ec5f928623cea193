package klp

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"strings"
)

// tableKind says what create does with a kernel metadata section's entries
// for the functions it carries.
type tableKind int

const (
	tableDrop   tableKind = iota // entries are optional for new code: left out
	tableCopy                    // entries of carried code are copied into the module
	tableRefuse                  // carried code with entries here is refused
)

// table describes a kernel metadata section: arrays of fixed-size entries
// whose first relocation points at the code the entry is about.
type table struct {
	kind   tableKind
	entry  uint64 // bytes per entry
	reason string // for tableRefuse
}

// tables are the kernel (6.1, x86-64) metadata sections the differ must not
// compare as data: they describe code, and change whenever code moves.
var tables = map[string]table{
	// ftrace call sites: new code stays untraced (livepatch redirects the
	// old function through ftrace; the new one needs no ftrace site).
	"__mcount_loc":                 {kind: tableDrop, entry: 8},
	"__patchable_function_entries": {kind: tableDrop, entry: 8},
	// Retpoline/return-thunk sites: the thunks they call are correct code;
	// the sites are only rewritten to faster forms at boot.
	".retpoline_sites": {kind: tableDrop, entry: 4},
	".return_sites":    {kind: tableDrop, entry: 4},
	".call_sites":      {kind: tableDrop, entry: 4},
	".ibt_endbr_seal":  {kind: tableDrop, entry: 4},
	// Static call sites: a direct call to the trampoline stays correct.
	".static_call_sites": {kind: tableDrop, entry: 8},
	// LOCK prefixes patched out on uniprocessor machines: keeping them is correct.
	".smp_locks": {kind: tableDrop, entry: 4},
	// Needed for correctness or reliable stacks: copied.
	".orc_unwind_ip": {kind: tableCopy, entry: 4}, // with .orc_unwind in parallel
	"__bug_table":    {kind: tableCopy, entry: 12},
	"__ex_table":     {kind: tableCopy, entry: 12},
	"__jump_table":   {kind: tableCopy, entry: 16},
	// struct alt_instr (6.1): instr, repl (PC32), cpuid u16, instrlen, replacementlen;
	// the replacement bytes are copied with the entry.
	".altinstructions": {kind: tableCopy, entry: 12},
	// struct paravirt_patch_site (6.1): instr (R_X86_64_64), type, len,
	// padding. The module loader patches the module's own sites
	// (module_finalize -> apply_paravirt) from pv_ops, as at boot.
	".parainstructions":  {kind: tableCopy, entry: 16},
	".static_call.text":  {kind: tableRefuse, entry: 1, reason: "defines a static call trampoline; not supported"},
	"__tracepoints_ptrs": {kind: tableRefuse, entry: 4, reason: "defines a tracepoint; not supported"},
}

// companions are sections that only make sense with a table above.
var companions = map[string]bool{".orc_unwind": true, ".orc_header": true, ".altinstr_replacement": true, ".altinstr_aux": true}

// metadata reports a section the differ must ignore: kernel tables,
// init/exit code and data (already run, or never run by a livepatch),
// export tables and initcalls.
func metadata(name string) bool {
	if _, ok := tables[name]; ok || companions[name] {
		return true
	}
	for _, p := range []string{".init.", ".exit.", ".initcall", ".con_initcall", "__ksymtab", "___ksymtab", "__kcrctab", "__param", "__modver", ".discard", ".modinfo", "__export_symbol", ".data.once", callbackPrefix, ".livesplice."} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return name == ".init" || name == "__tracepoints_strings" || name == dyndbgSection || name == dyndbgCarried
}

// neutralize returns a copy of a relocatable object in which every kernel
// metadata section (see metadata) is no longer SHF_ALLOC, which the object
// differ ignores: they change with the code they describe, and create
// handles them itself when it builds the module.
func neutralize(obj []byte) ([]byte, error) {
	f, err := elf.NewFile(bytes.NewReader(obj))
	if err != nil {
		return nil, err
	}
	if f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_REL {
		return nil, fmt.Errorf("not an x86-64 relocatable object")
	}
	out := append([]byte(nil), obj...)
	shoff := binary.LittleEndian.Uint64(out[0x28:])
	shentsize := uint64(binary.LittleEndian.Uint16(out[0x3a:]))
	shstrndx := int(binary.LittleEndian.Uint16(out[0x3e:]))
	if shstrndx >= len(f.Sections) {
		return nil, fmt.Errorf("bad section name table index")
	}
	shstr := f.Sections[shstrndx].Offset
	for i, s := range f.Sections {
		if s.Name == ".debug_info" {
			// Hide the DWARF from the differ's type layout check, which
			// cannot read the kernel's yet (docs/kernel.md).
			if err := hideName(out, shoff, shentsize, shstr, i); err != nil {
				return nil, err
			}
			continue
		}
		if !metadata(s.Name) || s.Flags&elf.SHF_ALLOC == 0 {
			continue
		}
		at := shoff + uint64(i)*shentsize + 8 // sh_flags
		if at+8 > uint64(len(out)) {
			return nil, fmt.Errorf("section header %d outside the file", i)
		}
		binary.LittleEndian.PutUint64(out[at:], uint64(s.Flags&^elf.SHF_ALLOC))
	}
	return out, nil
}

// hideName renames section i by changing the first letter after its dot
// (".debug_info" becomes ".xebug_info") in the section name string table.
func hideName(out []byte, shoff, shentsize, shstr uint64, i int) error {
	name := uint64(binary.LittleEndian.Uint32(out[shoff+uint64(i)*shentsize:]))
	at := shstr + name + 1
	if at >= uint64(len(out)) {
		return fmt.Errorf("section name %d outside the file", i)
	}
	out[at] = 'x'
	return nil
}
