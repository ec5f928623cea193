/* Answers "g N" with a greeting and "f N" with a formatted report. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) const char *greeting(int n)
{
	if (n > 10)
		return "good day";
	return "hello";
}

__attribute__((noinline)) void report(int n)
{
	printf("report: %d items\n", n);
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		int n = atoi(line + 2);
		if (line[0] == 'g')
			printf("%s\n", greeting(n));
		else
			report(n);
		fflush(stdout);
	}
	return 0;
}
