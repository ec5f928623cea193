/* Answers "N" with a score for N. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) int score(int n)
{
	if (n < 0)
		return 0;
	return n * 2;
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		printf("score=%d\n", score(atoi(line)));
		fflush(stdout);
	}
	return 0;
}
