// Counts SIGUSR1 (SA_RESTART handler) and prints the count every 10 ms.
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t usr1;

static void onusr1(int sig) { (void)sig; usr1++; }

int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = onusr1;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	struct timespec ts = {0, 10 * 1000 * 1000};
	for (;;) {
		printf("usr1 %d\n", (int)usr1);
		nanosleep(&ts, NULL);
	}
}
