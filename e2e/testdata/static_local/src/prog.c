/* Answers every line with the number of lines seen so far. */
#include <stdio.h>

__attribute__((noinline)) int counter(void)
{
	static int count;
	count++;
	return count;
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		printf("count=%d\n", counter());
		fflush(stdout);
	}
	return 0;
}
