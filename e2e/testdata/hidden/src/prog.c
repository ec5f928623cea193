/* Answers "N" with the tax of N cents from libtax. */
#include <stdio.h>
#include <stdlib.h>
#include "tax.h"

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		int n = atoi(line);
		printf("tax=%d extra=%d\n", tax_of(n), tax_extra(n));
		fflush(stdout);
	}
	return 0;
}
