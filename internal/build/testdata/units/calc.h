#define CALC_BASE 10
int calc(int x);
