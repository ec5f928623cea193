/* Threads are created and exit as fast as possible, each calling rate()
 * once; answers "N" with rate(N), how many calls saw a result that was
 * neither the old nor the new one, and whether threads are still churning. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static atomic_long spawned, bad;

__attribute__((noinline)) int rate(int n)
{
	return n * 2;
}

static void *worker(void *arg)
{
	int r = rate(7);
	(void)arg;
	if (r != 14 && r != 21)
		atomic_fetch_add(&bad, 1);
	return NULL;
}

static void *spawner(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_t t;
		if (pthread_create(&t, NULL, worker, NULL) == 0) {
			pthread_join(t, NULL);
			atomic_fetch_add(&spawned, 1);
		}
	}
	return NULL;
}

/* churning: threads were created since the last call (within a second). */
static const char *churning(void)
{
	static long last;
	struct timespec d = {0, 1000000};
	for (int i = 0; i < 1000; i++) {
		long now = atomic_load(&spawned);
		if (now != last) {
			last = now;
			return "yes";
		}
		nanosleep(&d, NULL);
	}
	return "no";
}

int main(void)
{
	char line[64];
	for (int i = 0; i < 4; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, spawner, NULL) != 0)
			return 1;
	}
	while (fgets(line, sizeof line, stdin)) {
		printf("rate=%d bad=%ld churn=%s\n", rate(atoi(line)), atomic_load(&bad), churning());
		fflush(stdout);
	}
	return 0;
}
