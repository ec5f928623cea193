/* A service run many times; the fleet test patches every instance. */
#include <stdio.h>

__attribute__((noinline)) int fee(int n)
{
	return n * 3 + 7;
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		printf("fee=%d\n", fee(10));
		fflush(stdout);
	}
	return 0;
}
