// Blocks in read(2) on stdin, or in nanosleep(2) with argument "sleep",
// and reports any EINTR or other failure the program would see.
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void onusr1(int sig) { (void)sig; }

static long ms(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int main(int argc, char **argv) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	// A handler without SA_RESTART: were a syscall ever interrupted on
	// the program's behalf, it would see EINTR.
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = onusr1;
	sigaction(SIGUSR1, &sa, NULL);
	if (argc > 1 && strcmp(argv[1], "sleep") == 0) {
		for (;;) {
			printf("sleeping\n");
			long t0 = ms();
			struct timespec ts = {0, 400 * 1000 * 1000};
			if (nanosleep(&ts, NULL) < 0)
				printf("%s\n", errno == EINTR ? "EINTR" : "ERR");
			else
				printf("slept %ld\n", ms() - t0);
		}
	}
	char buf[257];
	printf("ready\n");
	for (;;) {
		ssize_t n = read(0, buf, sizeof buf - 1);
		if (n < 0) {
			printf("%s %d\n", errno == EINTR ? "EINTR" : "ERR", errno);
			continue;
		}
		if (n == 0)
			return 0;
		buf[n] = 0;
		buf[strcspn(buf, "\n")] = 0;
		printf("got %s\n", buf);
	}
}
