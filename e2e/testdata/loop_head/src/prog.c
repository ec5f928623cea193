/* Answers a line with how many of its letters are 'a': count's loop head
 * is 2 bytes into the function (xor %edx,%edx; then the loop), so the
 * loop branches back into the bytes the entry jump covers. Optimised and
 * without loop alignment whatever the build's flags. */
#include <stdio.h>

__attribute__((noipa, optimize("O2", "align-loops=1"))) int count(const char *p)
{
	int c = 0;
	do
		c += *p == 'a';
	while (*p++);
	return c;
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		printf("a=%d\n", count(line));
		fflush(stdout);
	}
	return 0;
}
