/* Answers every line with how many lines this thread has seen, counted in
 * a thread-local variable of the program (local exec) and in two of a
 * library (general and local dynamic, and initial exec from here). */
#include <stdio.h>
#include "tlslib.h"

__thread int seen;
__thread int lines; /* used only by main: no replaced function shows where it lives */

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
