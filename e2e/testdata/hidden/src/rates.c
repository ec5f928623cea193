/* A hidden function: what the fix changes. */
#include "internal.h"

int rate_base(int cents)
{
	return cents / 10;
}
