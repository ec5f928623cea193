/* Another hidden function, which the fixed code calls too. */
#include "internal.h"

int rate_bonus(int cents)
{
	return cents / 20;
}
