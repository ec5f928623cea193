/*
 * Benchmark target, 8 threads: one spins measuring the largest gap between
 * two clock readings (one core stays free for livesplice, so the gap is
 * the stop, not CPU contention); 6 sleep; main answers queries. Queries:
 * "reset" clears the largest gap, "gap" prints it in ns, "call N" times N
 * calls of f0 and prints ns per call.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

__attribute__((noinline)) long f0(long x)
{
	return x * 3 + 0;
}

__attribute__((noinline)) long f1(long x)
{
	return x * 4 + 1;
}

__attribute__((noinline)) long f2(long x)
{
	return x * 5 + 2;
}

__attribute__((noinline)) long f3(long x)
{
	return x * 6 + 3;
}

__attribute__((noinline)) long f4(long x)
{
	return x * 7 + 4;
}

__attribute__((noinline)) long f5(long x)
{
	return x * 8 + 5;
}

__attribute__((noinline)) long f6(long x)
{
	return x * 9 + 6;
}

__attribute__((noinline)) long f7(long x)
{
	return x * 10 + 7;
}

__attribute__((noinline)) long f8(long x)
{
	return x * 11 + 8;
}

__attribute__((noinline)) long f9(long x)
{
	return x * 12 + 9;
}


static atomic_long maxgap;
static atomic_int resetting;
static volatile long sink;

static long now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void *spinner(void *arg)
{
	long last = now();
	(void)arg;
	for (long i = 0;; i++) {
		long t = now(), g = t - last;
		last = t;
		sink += f0(i) + f9(i);
		if (atomic_load_explicit(&resetting, memory_order_relaxed))
			continue;
		long m = atomic_load_explicit(&maxgap, memory_order_relaxed);
		if (g > m)
			atomic_compare_exchange_weak(&maxgap, &m, g);
	}
	return NULL;
}

static void *sleeper(void *arg)
{
	(void)arg;
	for (;;)
		sleep(1000);
	return NULL;
}

int main(void)
{
	pthread_t t;
	char line[64];
	pthread_create(&t, NULL, spinner, NULL);
	for (int i = 0; i < 6; i++)
		pthread_create(&t, NULL, sleeper, NULL);
	while (fgets(line, sizeof line, stdin)) {
		if (strncmp(line, "reset", 5) == 0) {
			atomic_store(&resetting, 1);
			usleep(1000);
			atomic_store(&maxgap, 0);
			atomic_store(&resetting, 0);
			printf("ok\n");
		} else if (strncmp(line, "gap", 3) == 0) {
			printf("%ld\n", atomic_load(&maxgap));
		} else if (strncmp(line, "call", 4) == 0) {
			long n = atol(line + 5), s = 0, t0 = now();
			for (long i = 0; i < n; i++)
				s += f1(i);
			sink += s;
			printf("%.3f\n", (double)(now() - t0) / n);
		}
		fflush(stdout);
	}
	return 0;
}
