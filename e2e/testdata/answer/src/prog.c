/*
 * Answers each query line with "a=A b=B" from a() and b(); a second
 * thread calls both in a loop with short sleeps, so the process has more
 * than one thread and some of them run while it is patched. The query
 * "g" is answered with "gap_ms=G": the longest time between two turns of
 * that loop since the query "r" (a process held stopped for a second
 * shows a gap of a second, unless something let the thread run).
 * "h" starts a thread that spins inside hold() until "e" releases it.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

__attribute__((noinline)) int a(void)
{
	return 1;
}

__attribute__((noinline)) int b(void)
{
	return 10;
}

static atomic_int entered, release;

__attribute__((noinline)) void hold(void)
{
	atomic_store(&entered, 1);
	while (!atomic_load(&release))
		;
}

static void *holder(void *arg)
{
	(void)arg;
	hold();
	return NULL;
}

static volatile long sink;
static atomic_long last_ns, max_gap_ns;

static long now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void *worker(void *arg)
{
	struct timespec ts = {0, 1000 * 1000};
	(void)arg;
	for (;;) {
		sink += a() + b();
		long now = now_ns(), last = atomic_exchange(&last_ns, now);
		if (last != 0 && now - last > atomic_load(&max_gap_ns))
			atomic_store(&max_gap_ns, now - last);
		nanosleep(&ts, NULL);
	}
	return NULL;
}

int main(void)
{
	pthread_t t, h;
	char line[64];
	pthread_create(&t, NULL, worker, NULL);
	while (fgets(line, sizeof line, stdin)) {
		if (line[0] == 'g') {
			printf("gap_ms=%ld\n", atomic_load(&max_gap_ns) / 1000000);
		} else if (line[0] == 'r') {
			printf("reset %ld\n", atomic_exchange(&max_gap_ns, 0) / 1000000);
		} else if (line[0] == 'h') {
			atomic_store(&entered, 0);
			atomic_store(&release, 0);
			pthread_create(&h, NULL, holder, NULL);
			while (!atomic_load(&entered))
				;
			printf("holding\n");
		} else if (line[0] == 'e') {
			atomic_store(&release, 1);
			pthread_join(h, NULL);
			printf("released\n");
		} else {
			printf("a=%d b=%d\n", a(), b());
		}
		fflush(stdout);
	}
	return 0;
}
