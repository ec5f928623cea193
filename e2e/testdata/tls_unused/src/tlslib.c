#include "tlslib.h"

__thread int lib_seen;
__thread int lib_extra = 7;
__thread int lib_far = 5;
static __thread int lib_calls = 3;

/* Keeps a GOT pair for lib_extra and the library's local dynamic pair. */
int lib_peek(void)
{
	return lib_extra + lib_calls;
}

int lib_count(void)
{
	return ++lib_seen;
}
