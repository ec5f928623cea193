/*
 * Two worker threads fork children without pause; each child calls f(7),
 * writes the result to a pipe and _exits; its parent thread reads it,
 * reaps the child and counts old (22) and new (23) results, and bad ones:
 * any other value, a short read, or a child that did not exit normally
 * (e.g. killed by a stray int3 it inherited).
 *
 * The query "m" sets a mark: from then on "since_old" and "since_new"
 * count only children forked after the mark. Any other query is answered
 * with "f=F children=N old=O new=W bad=B since_old=SO since_new=SN" where
 * F is the parent's own f(7).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((noinline)) long f(long x)
{
	return x * 3 + 1;
}

static atomic_long children, olds, news, bads;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static long mark, since_old, since_new; /* under mu */

static long current_mark(void)
{
	pthread_mutex_lock(&mu);
	long m = mark;
	pthread_mutex_unlock(&mu);
	return m;
}

/* count counts a child's result for the mark it was forked under. */
static void count(long m, long *since)
{
	pthread_mutex_lock(&mu);
	if (m == mark)
		(*since)++;
	pthread_mutex_unlock(&mu);
}

static void *forker(void *arg)
{
	(void)arg;
	for (;;) {
		int p[2];
		long r = 0, m;
		ssize_t n;
		int st;
		if (pipe(p) != 0) {
			perror("pipe");
			exit(1);
		}
		m = current_mark();
		pid_t c = fork();
		if (c < 0) {
			perror("fork");
			exit(1);
		}
		if (c == 0) {
			r = f(7);
			if (write(p[1], &r, sizeof r) != sizeof r)
				_exit(2);
			_exit(0);
		}
		close(p[1]);
		do
			n = read(p[0], &r, sizeof r);
		while (n < 0 && errno == EINTR);
		close(p[0]);
		while (waitpid(c, &st, 0) < 0) {
			if (errno != EINTR) {
				perror("waitpid");
				exit(1);
			}
		}
		if (n != sizeof r || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			atomic_fetch_add(&bads, 1);
		} else if (r == 22) {
			atomic_fetch_add(&olds, 1);
			count(m, &since_old);
		} else if (r == 23) {
			atomic_fetch_add(&news, 1);
			count(m, &since_new);
		} else {
			atomic_fetch_add(&bads, 1);
		}
		atomic_fetch_add(&children, 1);
	}
	return NULL;
}

int main(void)
{
	pthread_t t;
	char line[64];
	pthread_create(&t, NULL, forker, NULL);
	pthread_create(&t, NULL, forker, NULL);
	while (fgets(line, sizeof line, stdin)) {
		if (line[0] == 'm') {
			pthread_mutex_lock(&mu);
			mark++;
			since_old = since_new = 0;
			pthread_mutex_unlock(&mu);
			printf("marked\n");
		} else {
			pthread_mutex_lock(&mu);
			long so = since_old, sn = since_new;
			pthread_mutex_unlock(&mu);
			printf("f=%ld children=%ld old=%ld new=%ld bad=%ld since_old=%ld since_new=%ld\n", f(7),
			       atomic_load(&children), atomic_load(&olds), atomic_load(&news), atomic_load(&bads), so,
			       sn);
		}
		fflush(stdout);
	}
	return 0;
}
