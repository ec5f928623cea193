#include "aux.h"

int aux(int x) { return x - 1; }
