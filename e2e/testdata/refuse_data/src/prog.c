/* Answers "N" with the sum of the first N table entries, up to limit. */
#include <stdio.h>
#include <stdlib.h>

int limit = 10;
int table[4] = {1, 2, 3, 4};

__attribute__((noinline)) int sum(int n)
{
	int s = 0;
	for (int i = 0; i < n && i < (int)(sizeof table / sizeof table[0]); i++)
		s += table[i];
	return s > limit ? limit : s;
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		printf("sum=%d\n", sum(atoi(line)));
		fflush(stdout);
	}
	return 0;
}
