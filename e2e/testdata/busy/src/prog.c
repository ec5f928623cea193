/* One thread never leaves spin(); main answers queries with value(). */
#include <pthread.h>
#include <stdio.h>

volatile int stop;

__attribute__((noinline)) void spin(void)
{
	while (!stop)
		__asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) int value(void)
{
	return 1;
}

static void *worker(void *arg)
{
	(void)arg;
	spin();
	return NULL;
}

int main(void)
{
	pthread_t t;
	char line[64];
	pthread_create(&t, NULL, worker, NULL);
	while (fgets(line, sizeof line, stdin)) {
		printf("value=%d\n", value());
		fflush(stdout);
	}
	return 0;
}
