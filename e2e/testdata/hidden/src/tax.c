/* Exported functions, built on hidden ones of the other units. */
#include "tax.h"
#include "internal.h"

int tax_limit = 1000;

int tax_of(int cents)
{
	return rate_base(cents);
}

int tax_extra(int cents)
{
	return rate_bonus(cents);
}
