/* Answers one line per input line N: connection N&3's handled count and a
 * running checksum. main loops here for ever, and at -O2 GCC's -fipa-ra
 * lets it keep k in a call-clobbered register across the call to handle,
 * whose code it knows leaves that register alone. */
#include <stdio.h>
#include <stdlib.h>

struct conn {
	int id;
	int requests;
};

static struct conn conns[4];

static __attribute__((noinline)) int handle(struct conn *c)
{
	c->requests++;
	return c->requests * 2;
}

int main(void)
{
	char line[64];
	unsigned sum = 0;
	while (fgets(line, sizeof line, stdin)) {
		int n = atoi(line) & 3;
		unsigned k = n * 7 + 1;
		int r = handle(&conns[n]);
		sum += k * r;
		printf("conn=%d handled=%d sum=%u\n", n, r, sum + k);
		fflush(stdout);
	}
	return 0;
}
