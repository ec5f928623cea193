extern __thread int lib_seen;
extern __thread int lib_extra;
int lib_count(void);
int lib_peek(void);
