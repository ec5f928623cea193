/* "r N" prints a line with N, "t N" the N-th entry of a constant table.
   src2/ is the same program with another spelling and another table:
   an update built from src2 must not patch a program built from src. */
#include <stdio.h>
#include <stdlib.h>

static const int tab[4] = {10, 20, 30, 41};

__attribute__((noinline)) void report(int n)
{
	printf("value is %d\n", n);
}

__attribute__((noinline)) int lookup(int i)
{
	return tab[i & 3];
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		int n = atoi(line + 2);
		if (line[0] == 'r')
			report(n);
		else
			printf("%d\n", lookup(n));
		fflush(stdout);
	}
	return 0;
}
