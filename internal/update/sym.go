package update

// SymAnon marks a relocation target that only pre code refers to and that
// apply needs no address for (string literals, jump tables): run-pre
// matching skips its field and learns nothing from it.
const SymAnon = "anon"
