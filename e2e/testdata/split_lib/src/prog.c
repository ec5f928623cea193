/* Answers "N" with what both libraries make of N. */
#include <stdio.h>
#include <stdlib.h>

int one_value(int n);
int two_value(int n);

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		int n = atoi(line);
		printf("one=%d two=%d\n", one_value(n), two_value(n));
		fflush(stdout);
	}
	return 0;
}
