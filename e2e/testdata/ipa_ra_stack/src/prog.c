/* As ipa_ra, but handle takes an argument on the stack: main keeps values
 * in call-clobbered registers across the call (GCC's -fipa-ra), and no
 * stub that saves them can call handle with its stack argument in place. */
#include <stdio.h>
#include <stdlib.h>

struct conn {
	int id;
	int requests;
};

static struct conn conns[4];

static __attribute__((noinline)) int handle(struct conn *c, long a, long b, long d, long e, long f, long g)
{
	c->requests += 1 + (a + b + d + e + f + g == -1);
	return c->requests * 2;
}

int main(void)
{
	char line[64];
	unsigned sum = 0;
	while (fgets(line, sizeof line, stdin)) {
		int n = atoi(line) & 3;
		unsigned k = n * 7 + 1;
		int r = handle(&conns[n], n, n, n, n, n, n);
		sum += k * r;
		printf("conn=%d handled=%d sum=%u\n", n, r, sum + k);
		fflush(stdout);
	}
	return 0;
}
