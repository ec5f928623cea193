#include <stdio.h>

int bar_one(void);
int bar_long(void);

int main(void)
{
	printf("%d\n", bar_one() + bar_long());
	return 0;
}
