/* Answers every line with counts kept in thread-local variables. The
 * update makes count and lib_count reach variables that none of the
 * replaced functions' running code touches: lines (this program's, local
 * exec; only main uses it), lib_extra (the library's, initial exec from
 * here; nothing in the program uses it), and in the library lib_far
 * (general dynamic: no code uses it) and lib_calls (local dynamic: only
 * lib_peek uses it). */
#include <stdio.h>
#include "tlslib.h"

__thread int seen;
__thread int lines;

__attribute__((noinline)) int count(void)
{
	if (lib_seen < 0) /* the library's variable: initial exec */
		return -1;
	return ++seen;
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		lines++;
		int s = count();
		printf("seen=%d lib=%d\n", s, lib_count());
		fflush(stdout);
	}
	return 0;
}
