/* lsdemo-tool: the package's other binary package's program. */
#include <stdio.h>

int main(void)
{
	puts("lsdemo-tool");
	return 0;
}
