/* first and second are 3 bytes each, 8 bytes apart; third follows second
 * at once. second has no padding after it, so its jump goes into the 5
 * bytes of padding before it, which first's own jump (over the padding
 * after first) also covers: the two entry jumps would overlap, and apply
 * must refuse, changing nothing. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noipa, aligned(8))) int first(int x)
{
	return x;
}

__attribute__((noipa, aligned(8))) int second(int x)
{
	return x;
}

__attribute__((noipa)) int third(int x)
{
	return -x;
}

int main(void)
{
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		int x = atoi(line);
		printf("first=%d second=%d third=%d\n", first(x), second(x), third(x));
		fflush(stdout);
	}
	return 0;
}
