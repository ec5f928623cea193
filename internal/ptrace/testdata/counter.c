// Prints an increasing counter every 10 ms. add3 and forever are called
// by tests through Process.Call.
#define _GNU_SOURCE
#include <stdio.h>
#include <time.h>
#include <unistd.h>

__attribute__((noinline, used)) long add3(long a, long b, long c) {
	return a + b * 10 + c * 100;
}

__attribute__((noinline, used)) long sum6(long a, long b, long c, long d, long e, long f) {
	return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f;
}

__attribute__((noinline, used)) long forever(void) {
	for (volatile long i = 0;; i++)
		;
	return 0;
}

int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	struct timespec ts = {0, 10 * 1000 * 1000};
	for (long n = 0;; n++) {
		printf("%ld %ld\n", n, add3(n, 0, 0));
		nanosleep(&ts, NULL);
	}
}
