// Counts SIGUSR1 (SA_RESTART, SA_SIGINFO handler) and prints the count,
// with si_code and si_value of the last one, every 10 ms.
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t usr1, code, val;

static void onusr1(int sig, siginfo_t *si, void *uc) {
	(void)sig;
	(void)uc;
	usr1++;
	code = si->si_code;
	val = si->si_value.sival_int;
}

int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = onusr1;
	sa.sa_flags = SA_RESTART | SA_SIGINFO;
	sigaction(SIGUSR1, &sa, NULL);
	struct timespec ts = {0, 10 * 1000 * 1000};
	for (;;) {
		printf("usr1 %d code %d val %d\n", (int)usr1, (int)code, (int)val);
		nanosleep(&ts, NULL);
	}
}
