/* scale and resize are one function (an alias); the fix gives resize code
 * of its own: the update would give the one running function two new
 * codes, which apply must refuse, changing nothing. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noipa)) int scale(int x)
{
	return 2 * x;
}

int resize(int x) __attribute__((alias("scale")));

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		int x = atoi(line);
		printf("scale=%d resize=%d\n", scale(x), resize(x));
		fflush(stdout);
	}
	return 0;
}
