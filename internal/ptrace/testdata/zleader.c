// The main thread exits with pthread_exit; a worker thread goes on
// printing a counter every 10 ms, so the group leader stays a zombie.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <time.h>

static void *worker(void *arg) {
	struct timespec ts = {0, 10 * 1000 * 1000};
	for (long n = 0;; n++) {
		printf("%ld\n", n);
		nanosleep(&ts, NULL);
	}
	return arg;
}

int main(int argc, char **argv) {
	(void)argv;
	setvbuf(stdout, NULL, _IOLBF, 0);
	pthread_t t;
	pthread_create(&t, NULL, worker, NULL);
	if (argc > 1) {
		// "late": leave time to attach before the leader exits.
		struct timespec ts = {0, 200 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	pthread_exit(NULL);
}
