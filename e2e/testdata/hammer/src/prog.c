/*
 * 8 threads call f() and g() without pause and check every result is the
 * old or the new version's; main answers "iters=N wrong=M".
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

__attribute__((noinline)) long f(long x)
{
	return x * 3 + 1;
}

__attribute__((noinline)) long g(long x)
{
	return x ^ 0x55;
}

static atomic_long iters, wrong;

static void *worker(void *arg)
{
	long x = (long)arg;
	for (;;) {
		long a = f(x), b = g(x);
		if ((a != x * 3 + 1 && a != x * 3 + 2) || (b != (x ^ 0x55) && b != (x ^ 0xaa)))
			atomic_fetch_add(&wrong, 1);
		atomic_fetch_add_explicit(&iters, 1, memory_order_relaxed);
		x++;
	}
	return NULL;
}

int main(void)
{
	pthread_t t[8];
	char line[64];
	for (long i = 0; i < 8; i++)
		pthread_create(&t[i], NULL, worker, (void *)(i << 32));
	while (fgets(line, sizeof line, stdin)) {
		printf("iters=%ld wrong=%ld f=%ld\n", atomic_load(&iters), atomic_load(&wrong), f(1));
		fflush(stdout);
	}
	return 0;
}
