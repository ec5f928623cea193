/*
 * Answers "c N" (scale: a .constprop clone), "i N" (weight: an .isra
 * clone), "p N" (lookup: partial inlining makes a .part clone) and "e N"
 * (check: its unlikely error path is split into check.cold).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Always called with factor 3: gcc makes scale.constprop.0. */
static __attribute__((noinline)) int scale(int v, int factor)
{
	int r = 0;
	for (int i = 0; i < factor; i++)
		r = r * 7 + v * i;
	if (v > 50)
		r -= factor * 1000;
	return r;
}

struct item {
	int weight;
	int pad[7];
	char name[32];
};

/* Reads only one field of *it: gcc makes weight.isra.0 taking an int. */
static __attribute__((noinline)) int weight(const struct item *it)
{
	int w = it->weight;
	if (w > 9)
		return w * 2 + 1;
	return w * 5 - 3;
}

static int table[64];
static int filled;

/* A likely early exit and a big slow part: gcc inlines the test into the
 * callers and splits the rest into lookup.part.0. */
static int lookup(int k)
{
	if (__builtin_expect(k < 0, 1))
		return -1;
	if (!filled) {
		for (int i = 0; i < 64; i++)
			table[i] = i * i + (i ^ 5) * 3 - (i >> 2);
		for (int i = 1; i < 64; i++)
			table[i] += table[i - 1] % 7;
		filled = 1;
	}
	int s = 0;
	for (int i = 0; i <= (k & 63); i++)
		s += table[i] % 11;
	return s + k;
}

__attribute__((noinline)) int lookup_one(int k)
{
	return lookup(k);
}

__attribute__((noinline)) int lookup_two(int k)
{
	return lookup(k + 2) + lookup(k * 3);
}

volatile int errors;

__attribute__((cold, noinline)) void report(int v)
{
	errors += v;
}

/* The branch calling a cold function goes to check.cold. */
__attribute__((noinline)) int check(int v)
{
	if (v > 1000) {
		report(v);
		return -(v % 1000);
	}
	return v + 1;
}

int main(void)
{
	char line[64];
	struct item it;
	memset(&it, 0, sizeof it);
	while (fgets(line, sizeof line, stdin)) {
		int n = atoi(line + 2);
		switch (line[0]) {
		case 'c':
			printf("scale=%d\n", scale(n, 3));
			break;
		case 'i':
			it.weight = n;
			printf("weight=%d\n", weight(&it));
			break;
		case 'p':
			printf("lookup=%d %d\n", lookup_one(n), lookup_two(n));
			break;
		default:
			printf("check=%d\n", check(n));
		}
		fflush(stdout);
	}
	return 0;
}
