/* Answers "N" with twice N. The update makes "7" block in pause() inside
 * the replaced function, so that a debugger can take a backtrace through
 * the patched code. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((noinline)) int work(int n)
{
	return n * 2;
}

__attribute__((noinline)) static void answer(int n)
{
	printf("%d\n", work(n));
	fflush(stdout);
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin))
		answer(atoi(line));
	return 0;
}
