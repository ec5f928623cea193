#include "tlslib.h"

__thread int lib_seen;          /* general dynamic from inside the library */
static __thread int lib_calls;  /* local dynamic */

int lib_count(void)
{
	lib_calls++;
	return ++lib_seen + 0 * lib_calls;
}
