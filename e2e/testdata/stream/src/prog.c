/* A service the update stream test keeps patched: answers "N" with the
 * shipping cost of an order of N items. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) int stream_shipping(int items)
{
	if (items <= 0)
		return 0;
	return 500 + items * 10;
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		printf("shipping=%d\n", stream_shipping(atoi(line)));
		fflush(stdout);
	}
	return 0;
}
