#include <stdio.h>
#include "helper.h"

int main(void) {
	printf("%d\n", helper(1));
	return 0;
}
