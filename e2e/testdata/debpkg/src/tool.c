/* lsdemo-tool: the package's other binary package's program. */
#include <stdio.h>
#include "version.h"

int main(void)
{
	puts("lsdemo-tool " LSDEMO_VERSION);
	return 0;
}
