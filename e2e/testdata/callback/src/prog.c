/* Answers "a b c ..." with the numbers sorted, read as digits of one number. */
#include <stdio.h>
#include <stdlib.h>

static int ascending(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

static __attribute__((noinline)) long weight(const int *v, int n)
{
	long w = 0;
	for (int i = 0; i < n; i++)
		w = w * 10 + v[i];
	return w;
}

__attribute__((noinline)) void sort_all(int *v, int n)
{
	qsort(v, n, sizeof *v, ascending);
}

static int parse(const char *line, int *v, int max)
{
	int n = 0;
	char *end;
	while (n < max) {
		long x = strtol(line, &end, 10);
		if (end == line)
			break;
		v[n++] = (int)x;
		line = end;
	}
	return n;
}

__attribute__((noinline)) void answer(const char *line)
{
	int v[8];
	int n = parse(line, v, 8);
	sort_all(v, n);
	printf("sorted=%ld\n", weight(v, n));
}

int main(void)
{
	char line[128];
	while (fgets(line, sizeof line, stdin)) {
		answer(line);
		fflush(stdout);
	}
	return 0;
}
