#include "util.h"

int add(int a, int b)
{
	return a + b;
}

int scale(int x)
{
	return x * 2;
}
