/* Answers "N" with the tax on N cents. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) long tax(long cents)
{
	return cents / 5;
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		printf("tax=%ld\n", tax(atol(line)));
		fflush(stdout);
	}
	return 0;
}
