#include "helper.h"

int helper(int x) { return x + 100; }
