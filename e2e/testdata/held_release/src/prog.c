/*
 * Two threads inside work(): one calls it in a loop (it prints a line and
 * sleeps 5 ms in it, so it is caught at its return stub at once), the
 * other never leaves it (it spins). An apply must be refused, and the
 * first thread must not stay frozen at its stub meanwhile: main answers a
 * query only once that thread made two more calls.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

static atomic_int last;
static atomic_long calls;
static volatile int stop;
static FILE *out;

__attribute__((noinline)) int work(int x)
{
	struct timespec ts = {0, 5 * 1000 * 1000};
	while (x < 0 && !stop)
		__asm__ volatile("" ::: "memory");
	fprintf(out, "work %d\n", x);
	fflush(out);
	nanosleep(&ts, NULL);
	return 1;
}

static void *worker(void *arg)
{
	(void)arg;
	for (int i = 0;; i++) {
		atomic_store(&last, work(i));
		atomic_fetch_add(&calls, 1);
	}
	return NULL;
}

static void *spinner(void *arg)
{
	(void)arg;
	work(-1);
	return NULL;
}

int main(void)
{
	pthread_t t, s;
	char line[64];
	out = fopen("/dev/null", "w");
	pthread_create(&t, NULL, worker, NULL);
	pthread_create(&s, NULL, spinner, NULL);
	while (fgets(line, sizeof line, stdin)) {
		long before = atomic_load(&calls);
		while (atomic_load(&calls) < before + 2) {
			struct timespec ts = {0, 1000 * 1000};
			nanosleep(&ts, NULL);
		}
		printf("value=%d calls=%ld\n", atomic_load(&last), atomic_load(&calls));
		fflush(stdout);
	}
	return 0;
}
