/* With WATCH_GATE set, the program waits before its entry point: this
 * library's constructor runs in the dynamic loader, before the program's
 * first instruction, and reads one line from stdin. The test lets it go
 * once livesplice watch has the process, so that the test does not depend
 * on how fast watch reacts. */
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void gate(void)
{
	char c;
	if (!getenv("WATCH_GATE"))
		return;
	while (read(0, &c, 1) == 1 && c != '\n')
		;
}
