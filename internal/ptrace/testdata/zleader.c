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

int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	pthread_t t;
	pthread_create(&t, NULL, worker, NULL);
	pthread_exit(NULL);
}
