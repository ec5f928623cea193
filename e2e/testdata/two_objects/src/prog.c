/* Answers "N" with the discounted price of N cents from libfoo. The
 * update changes both this program (answer) and the library. */
#include <stdio.h>
#include <stdlib.h>
#include "foo.h"

__attribute__((noinline)) static void answer(int n)
{
	printf("price=%d %s\n", foo_discount(n), foo_label(n));
	fflush(stdout);
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin))
		answer(atoi(line));
	return 0;
}
