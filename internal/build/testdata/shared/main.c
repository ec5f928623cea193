#include <stdio.h>

int foo_twice(void);

int main(void)
{
	printf("%d\n", foo_twice());
	return 0;
}
