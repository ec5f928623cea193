/*
 * A worker thread calls work() in a loop; work() prints a line and sleeps
 * in nanosleep, so the thread is inside work() almost all the time (and
 * mostly blocked in a system call there). main answers queries with
 * "value=<value of work's last call> calls=<calls>".
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

static atomic_int last;
static atomic_long calls;
static FILE *out;

__attribute__((noinline)) int work(int x)
{
	struct timespec ts = {0, 5 * 1000 * 1000};
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

int main(void)
{
	pthread_t t;
	char line[64];
	out = fopen("/dev/null", "w");
	pthread_create(&t, NULL, worker, NULL);
	while (fgets(line, sizeof line, stdin)) {
		long before = atomic_load(&calls);
		/* Wait for a call that started after the query: its value is
		 * what the code running now returns. */
		while (atomic_load(&calls) < before + 2) {
			struct timespec ts = {0, 1000 * 1000};
			nanosleep(&ts, NULL);
		}
		printf("value=%d calls=%ld\n", atomic_load(&last), atomic_load(&calls));
		fflush(stdout);
	}
	return 0;
}
