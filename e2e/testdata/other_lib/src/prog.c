/* Answers "d N" with the diagonal of an N by N square, "v N" with N
 * described; only diagonal uses libm. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) double diagonal(double side)
{
	return hypot(side, side);
}

__attribute__((noinline)) void describe(int n)
{
	printf("volume=%d\n", n);
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		int n = atoi(line + 1);
		if (line[0] == 'd')
			printf("diagonal=%.3f\n", diagonal(n));
		else
			describe(n);
		fflush(stdout);
	}
	return 0;
}
