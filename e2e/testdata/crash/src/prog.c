/*
 * 8 threads call combo() without pause. combo and the three functions it
 * calls are all replaced by the update, so every result must be wholly
 * old or wholly new; anything else is a half-applied update and counts as
 * a mix. main answers "v=<combo(7)> mix=<mixes> iters=<calls>".
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

__attribute__((noinline)) long f1(long x) { return x + 1; }
__attribute__((noinline)) long f2(long x) { return x * 2; }
__attribute__((noinline)) long f3(long x) { return x ^ 3; }
__attribute__((noinline)) long combo(long x) { return f1(x) + f2(x) + f3(x) + 1000; }

static long old_value(long x) { return (x + 1) + (x * 2) + (x ^ 3) + 1000; }
static long new_value(long x) { return (x + 10) + (x * 3) + (x ^ 5) + 2000; }

static atomic_long mixes, iters;

static void *worker(void *arg)
{
	long x = (long)arg;
	for (;;) {
		long v = combo(x);
		if (v != old_value(x) && v != new_value(x))
			atomic_fetch_add(&mixes, 1);
		atomic_fetch_add_explicit(&iters, 1, memory_order_relaxed);
		x = (x + 1) & 0xffff;
	}
	return NULL;
}

int main(void)
{
	pthread_t t;
	char line[64];
	for (long i = 0; i < 8; i++)
		pthread_create(&t, NULL, worker, (void *)(i * 1000));
	while (fgets(line, sizeof line, stdin)) {
		printf("v=%ld mix=%ld iters=%ld\n", combo(7), atomic_load(&mixes), atomic_load(&iters));
		fflush(stdout);
	}
	return 0;
}
