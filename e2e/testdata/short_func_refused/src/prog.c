/* Answers "N" with clamp(N): clamp is 3 bytes, shorter than the 5-byte
 * jump that redirects a function, and packed among other functions
 * (-falign-functions=1) with no padding after it and none before it
 * within reach of a 2-byte jump: apply must refuse it by name. */
#include <stdio.h>
#include <stdlib.h>

#define F(n) __attribute__((noipa)) int f##n(int x) { return x * (n + 3) / 7 + (x ^ n) * 13 - n; }
F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8)

__attribute__((noipa)) int clamp(int x)
{
	return x;
}

__attribute__((noipa)) int twice(int x)
{
	return 2 * x + 1 - 1;
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		int n = atoi(line);
		printf("clamp=%d twice=%d f=%d\n", clamp(n), twice(n), f1(n) + f2(n) + f3(n) + f4(n) + f5(n) + f6(n) + f7(n) + f8(n));
		fflush(stdout);
	}
	return 0;
}
