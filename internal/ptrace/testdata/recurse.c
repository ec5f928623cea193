// A worker thread calls rec(3) in a loop; rec(0) spins about a
// millisecond. Built with -O0 so every frame has rbp-based frames.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <time.h>

static volatile long done;

__attribute__((noinline, used)) long rec(int n) {
	if (n == 0) {
		for (volatile long i = 0; i < 200000; i++)
			;
		return 0;
	}
	long r = rec(n - 1);
	return r + 1;
}

static void *worker(void *arg) {
	for (;;) {
		if (rec(3) != 3) {
			printf("BAD\n");
		}
		done++;
	}
	return arg;
}

int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	pthread_t t;
	pthread_create(&t, NULL, worker, NULL);
	struct timespec ts = {0, 10 * 1000 * 1000};
	for (;;) {
		printf("done %ld\n", done);
		nanosleep(&ts, NULL);
	}
}
