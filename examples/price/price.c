/* A long-running service with a bug: the bulk discount is never given. */
#include <stdio.h>
#include <unistd.h>

__attribute__((noinline)) int price(int qty)
{
	int total = qty * 10;
	if (qty > 100) /* bug: should be qty >= 10 */
		total -= total / 10;
	return total;
}

/* volatile: otherwise gcc computes price(12) once, before the loop */
volatile int qty = 12;

int main(void)
{
	for (int i = 0;; i++) {
		printf("tick %d: price(%d) = %d\n", i, qty, price(qty));
		fflush(stdout);
		usleep(500 * 1000);
	}
}
