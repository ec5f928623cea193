/* A service started in its own mount namespace under another name: apply
 * --all finds it by the build-id of its mapped file. */
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
