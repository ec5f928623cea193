/* hold: the corpus's process for a shared library: it loads each library
 * named on its command line (as a program linked against it would, but
 * without one per library), says so, and waits to be patched. */
#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
	for (int i = 1; i < argc; i++) {
		if (!dlopen(argv[i], RTLD_NOW | RTLD_GLOBAL)) {
			fprintf(stderr, "hold: %s\n", dlerror());
			return 1;
		}
	}
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}
