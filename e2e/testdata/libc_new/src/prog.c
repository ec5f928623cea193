/* Answers every line with a description of it. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) void describe(const char *line)
{
	int n = atoi(line);
	if (n < 0)
		n = 0;
	printf("n=%d\n", n);
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		describe(line);
		fflush(stdout);
	}
	return 0;
}
