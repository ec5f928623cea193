/* The shared library: prices and labels. */
#include "foo.h"

static int limit = 1000;
int foo_calls;

static __attribute__((noinline)) int percent(int cents, int p)
{
	return cents * p / 100;
}

int foo_discount(int cents)
{
	foo_calls++;
	if (cents > limit)
		return cents - percent(cents, 10);
	return cents;
}

const char *foo_label(int cents)
{
	if (cents > limit)
		return "big";
	return "small";
}
