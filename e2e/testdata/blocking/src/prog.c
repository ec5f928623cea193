/*
 * Every thread spends its life blocked in a system call: one in read() on
 * stdin, one in nanosleep(), one in pthread_cond_wait(). A ptrace stop
 * must be invisible to them: any call failing with EINTR prints
 * "EINTR in CALL" and exits. The sleeper measures each 20 ms sleep: one
 * that returns early is counted, the worst lateness is kept.
 *
 * argv[1] "sleep" puts the sleeper on the main thread (the thread-group
 * leader) and the reader on a second thread; default: the leader reads.
 *
 * Each query line wakes the waiter, waits for its acknowledgement and is
 * answered with "value=V sleeps=N early=E maxlate_us=L wakes=W".
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

__attribute__((noinline)) int value(void)
{
	return 1;
}

#define SLEEP_NS (20 * 1000 * 1000L)

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t ack = PTHREAD_COND_INITIALIZER;
static long gen, seen; /* under mu */
static atomic_long sleeps, early, maxlate, wakes;

static void fail(const char *what, int err)
{
	if (err == EINTR)
		printf("EINTR in %s\n", what);
	else
		printf("%s: %s\n", what, strerror(err));
	fflush(stdout);
	_exit(1);
}

static long now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void *sleeper(void *arg)
{
	(void)arg;
	for (;;) {
		struct timespec ts = {0, SLEEP_NS};
		long t0 = now_ns();
		if (nanosleep(&ts, NULL) != 0)
			fail("nanosleep", errno);
		long late = now_ns() - t0 - SLEEP_NS;
		if (late < 0)
			atomic_fetch_add(&early, 1);
		if (late / 1000 > atomic_load(&maxlate))
			atomic_store(&maxlate, late / 1000);
		atomic_fetch_add(&sleeps, 1);
	}
	return NULL;
}

static void *waiter(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&mu);
	for (;;) {
		while (seen == gen) {
			int rc = pthread_cond_wait(&cv, &mu);
			if (rc)
				fail("pthread_cond_wait", rc);
		}
		seen = gen;
		atomic_fetch_add(&wakes, 1);
		pthread_cond_signal(&ack);
	}
	return NULL;
}

static void answer(void)
{
	pthread_mutex_lock(&mu);
	gen++;
	pthread_cond_signal(&cv);
	while (seen != gen) {
		int rc = pthread_cond_wait(&ack, &mu);
		if (rc)
			fail("pthread_cond_wait", rc);
	}
	pthread_mutex_unlock(&mu);
	printf("value=%d sleeps=%ld early=%ld maxlate_us=%ld wakes=%ld\n", value(),
	       atomic_load(&sleeps), atomic_load(&early), atomic_load(&maxlate), atomic_load(&wakes));
	fflush(stdout);
}

static void *reader(void *arg)
{
	char buf[256];
	size_t n = 0;
	(void)arg;
	for (;;) {
		ssize_t r = read(0, buf + n, sizeof buf - n);
		if (r < 0)
			fail("read", errno);
		if (r == 0)
			exit(0);
		n += r;
		char *nl;
		while ((nl = memchr(buf, '\n', n)) != NULL) {
			size_t used = nl - buf + 1;
			answer();
			memmove(buf, buf + used, n - used);
			n -= used;
		}
		if (n == sizeof buf)
			n = 0;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t t1, t2;
	int leader_sleeps = argc > 1 && strcmp(argv[1], "sleep") == 0;
	pthread_create(&t1, NULL, waiter, NULL);
	pthread_create(&t2, NULL, leader_sleeps ? reader : sleeper, NULL);
	if (leader_sleeps)
		sleeper(NULL);
	else
		reader(NULL);
	return 0;
}
