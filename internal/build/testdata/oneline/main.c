#include <stdio.h>
#include "util.h"

int main(void)
{
	printf("%d\n", scale(add(1, 2)));
	return 0;
}
