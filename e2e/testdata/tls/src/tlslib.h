extern __thread int lib_seen;
int lib_count(void);
