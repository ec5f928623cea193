/* Answers "N" with clamp(N): a function of 3 bytes (mov %edi,%eax; ret),
 * shorter than the 5-byte jump that redirects a function. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noipa)) int clamp(int x)
{
	return x;
}

/* Follows clamp in .text: the bytes between them are alignment padding. */
__attribute__((noipa)) int twice(int x)
{
	return 2 * x + 1 - 1;
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		int n = atoi(line);
		printf("clamp=%d twice=%d\n", clamp(n), twice(n));
		fflush(stdout);
	}
	return 0;
}
