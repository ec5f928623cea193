/* One of many identical processes: it maps libfleetbench and sleeps in a
 * system call, as an idle server does. */
#include <unistd.h>

int fee(int n);

int main(void)
{
	volatile int v = fee(1);
	(void)v;
	for (;;)
		pause();
}
