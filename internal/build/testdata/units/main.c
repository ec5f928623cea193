#include <stdio.h>
#include <stdlib.h>
#include "calc.h"
#include "aux.h"

int main(int argc, char **argv) {
	int x = argc > 1 ? atoi(argv[1]) : 1;
	printf("%d %d %d\n", calc(x), aux(x), CALC_BASE);
	return 0;
}
