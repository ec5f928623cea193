/* Answers every line with how many lines this thread has seen. */
#include <stdio.h>

__thread int seen;

__attribute__((noinline)) int count(void)
{
	return ++seen;
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		printf("seen=%d\n", count());
		fflush(stdout);
	}
	return 0;
}
