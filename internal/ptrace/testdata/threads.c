// Eight long-running threads plus a main loop that creates and joins
// short-lived threads as fast as it can; prints progress lines.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static volatile long work[8];

static void *longrun(void *arg) {
	long i = (long)arg;
	for (;;) {
		for (volatile int k = 0; k < 1000; k++)
			;
		work[i]++;
		usleep(100);
	}
	return NULL;
}

static void *shortrun(void *arg) { return arg; }

int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	pthread_t t;
	for (long i = 0; i < 8; i++)
		pthread_create(&t, NULL, longrun, (void *)i);
	for (long n = 0;; n++) {
		pthread_t s[4];
		for (int k = 0; k < 4; k++)
			if (pthread_create(&s[k], NULL, shortrun, NULL) != 0) {
				printf("create failed\n");
				return 1;
			}
		for (int k = 0; k < 4; k++)
			pthread_join(s[k], NULL);
		if (n % 200 == 0)
			printf("iter %ld\n", n);
	}
}
