#include <stdio.h>

const char *stamp(void);

int main(void)
{
	puts(stamp());
	return 0;
}
