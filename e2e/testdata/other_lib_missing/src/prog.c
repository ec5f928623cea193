/* Answers every line with its length. */
#include <stdio.h>
#include <string.h>

__attribute__((noinline)) void describe(const char *line)
{
	printf("len=%zu\n", strcspn(line, "\n"));
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
