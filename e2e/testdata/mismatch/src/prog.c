/* Answers one line per input line: the price of N items. */
#include <stdio.h>
#include <stdlib.h>

#define UNIT 10

__attribute__((noinline)) int price(int qty)
{
	int total = qty * UNIT;
	if (qty > 100)
		total -= total / 10;
	return total;
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		printf("price=%d\n", price(atoi(line)));
		fflush(stdout);
	}
	return 0;
}
