#include <stdio.h>
#include "aux.c"

int main(void) {
	printf("%d\n", aux(5));
	return 0;
}
