/* lsdemo-server: a long-running program of the test Debian package
 * lsdemo (e2e/deb_pkg_test.go). Each line read is a number N, answered
 * with one line: "level(N) twice(N)". Debian's install step of the
 * package ships it as /usr/bin/lsdemo-check, /usr/bin/lsdemo-server a
 * symlink to it, the way redis ships redis-server. */
#include <stdio.h>
#include <stdlib.h>

int scale = 1;

__attribute__((noinline)) const char *level(int n)
{
	if (n > 100)
		return "high";
	return "low";
}

/* Far enough from scale that a patch of one has no context of the other. */
static int queries;

__attribute__((noinline)) int twice(int n)
{
	queries++;
	return 2 * n * scale;
}

int main(void)
{
	char line[64];

	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof line, stdin) != NULL) {
		int n = atoi(line);
		printf("%s %d\n", level(n), twice(n));
	}
	return 0;
}
