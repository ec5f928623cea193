/* Answers "N" with a check of N; nothing here uses stderr. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) void check(const char *line)
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
		check(line);
		fflush(stdout);
	}
	return 0;
}
