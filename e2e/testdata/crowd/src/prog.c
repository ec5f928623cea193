/*
 * 12 threads (more than the cores) call crunch() in a loop; crunch() only
 * computes, so every thread is inside it almost all the time, and leaves
 * it thousands of times a second. main answers queries with
 * "value=<what crunch returned last> wrong=<results neither 1 nor 2>".
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#define THREADS 12

static atomic_int last;
static atomic_long calls, wrong;
static volatile unsigned long sink;

__attribute__((noinline)) int crunch(unsigned long x)
{
	for (int i = 0; i < 20000; i++)
		x = x * 6364136223846793005UL + 1442695040888963407UL;
	sink = x;
	return 1;
}

static void *worker(void *arg)
{
	unsigned long x = (unsigned long)arg;
	for (;;) {
		int v = crunch(x++);
		if (v != 1 && v != 2)
			atomic_fetch_add(&wrong, 1);
		atomic_store(&last, v);
		atomic_fetch_add(&calls, 1);
	}
	return NULL;
}

int main(void)
{
	pthread_t t;
	char line[64];
	for (long i = 0; i < THREADS; i++)
		pthread_create(&t, NULL, worker, (void *)i);
	while (fgets(line, sizeof line, stdin)) {
		long before = atomic_load(&calls);
		while (atomic_load(&calls) < before + 2 * THREADS) {
			struct timespec ts = {0, 1000 * 1000};
			nanosleep(&ts, NULL);
		}
		printf("value=%d wrong=%ld\n", atomic_load(&last), atomic_load(&wrong));
		fflush(stdout);
	}
	return 0;
}
