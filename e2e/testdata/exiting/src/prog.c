/*
 * Exits on its own after a random 30-300 ms, so that it dies at any point
 * of a live patch. Two threads call f() without pause and watch the clock;
 * the first to see the deadline calls exit(). They never block, so they
 * run on while livesplice holds a thread blocked in a system call (the
 * main thread) for its own use: the exit does not wait for livesplice.
 *
 * argv[1] "thread": the main thread leaves at once (pthread_exit: the
 * thread-group leader stays a zombie while the others run); default: the
 * main thread sleeps in pause().
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

__attribute__((noinline)) long f(long x)
{
	return x + 1;
}

static volatile long sink;
static long deadline_ns;

static long now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void *spin(void *arg)
{
	(void)arg;
	for (;;) {
		for (int i = 0; i < 1000; i++)
			sink = f(sink);
		if (now_ns() >= deadline_ns)
			exit(0);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t t;
	srand(now_ns() ^ getpid());
	deadline_ns = now_ns() + (30 + rand() % 270) * 1000000L;
	pthread_create(&t, NULL, spin, NULL);
	pthread_create(&t, NULL, spin, NULL);
	if (argc > 1 && strcmp(argv[1], "thread") == 0)
		pthread_exit(NULL);
	for (;;)
		pause();
	return 0;
}
