/* libcare's fail_unpatch, in short: the fix changes greet's string; at -O0
   every string literal shares one .rodata, so other's string moves, but
   other's code and the bytes it reaches are the same: it stays out. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) void greet(void)
{
	printf("Hello. This is an UNPATCHED version!\n");
}

__attribute__((noinline)) void other(int n)
{
	printf("other %d (%.2f)\n", n, n * 1.25);
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		if (line[0] == 'g')
			greet();
		else
			other(atoi(line + 2));
		fflush(stdout);
	}
	return 0;
}
