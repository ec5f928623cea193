/* A program started while livesplice watch runs: its first line already
 * shows the patched fee. */
#include <stdio.h>

__attribute__((noipa)) int fee(int n)
{
	return n * 3 + 7;
}

int main(void)
{
	char line[64];
	printf("fee=%d\n", fee(10));
	fflush(stdout);
	while (fgets(line, sizeof line, stdin)) {
		printf("fee=%d\n", fee(10));
		fflush(stdout);
	}
	return 0;
}
