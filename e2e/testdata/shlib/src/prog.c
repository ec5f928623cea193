/* Answers "N" with the discounted price of N cents from libfoo. */
#include <stdio.h>
#include <stdlib.h>
#include "foo.h"

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		int n = atoi(line);
		printf("price=%d %s\n", foo_discount(n), foo_label(n));
		fflush(stdout);
	}
	return 0;
}
