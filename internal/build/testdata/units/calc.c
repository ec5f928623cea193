#include "calc.h"

static int __attribute__((noinline)) calc_scale(int x) { return x * 3; }

int calc(int x) { return calc_scale(x) + CALC_BASE; }
