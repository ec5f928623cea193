/* Answers "K N" with op(K, N): a dense switch compiled to a jump table. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) long op(int k, long n)
{
	switch (k) {
	case 0:
		return n + 1;
	case 1:
		return n * 3;
	case 2:
		return n - 7;
	case 3:
		return n << 4;
	case 4:
		return n / 3;
	case 5:
		return n % 11;
	case 6:
		return -n;
	case 7:
		return n * n;
	case 8:
		return n ^ 0x55;
	case 9:
		return n | 0x100;
	default:
		return 0;
	}
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		int k = atoi(line);
		long n = atol(line + 2);
		printf("op=%ld\n", op(k, n));
		fflush(stdout);
	}
	return 0;
}
