/* Answers "a N" with area(N) and "b N" with border(N): both use clamp(). */
#include <stdio.h>
#include <stdlib.h>

static inline int clamp(int v)
{
	if (v > 100)
		return 100;
	return v;
}

__attribute__((noinline)) int area(int n)
{
	int c = clamp(n);
	return c * c;
}

__attribute__((noinline)) int border(int n)
{
	return 4 * clamp(n);
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		int n = atoi(line + 2);
		if (line[0] == 'a')
			printf("area=%d\n", area(n));
		else
			printf("border=%d\n", border(n));
		fflush(stdout);
	}
	return 0;
}
