/* Answers "N" with clamp(N): clamp is 3 bytes (mov %edi,%eax; ret),
 * shorter than the 5-byte jump that redirects a function, and the last
 * function of .text: .fini follows at once, so there is no padding after
 * it, only the alignment padding before it. Optimised whatever the
 * build's flags. */
#include <stdio.h>
#include <stdlib.h>

int clamp(int x);

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		int n = atoi(line);
		printf("clamp=%d\n", clamp(n));
		fflush(stdout);
	}
	return 0;
}

__attribute__((noipa, optimize("O2"))) int clamp(int x)
{
	return x;
}
