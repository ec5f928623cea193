/* Built twice, into libone and libtwo: the static scale is in both. */
#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)

static __attribute__((noinline)) int scale(int n)
{
	if (n > 100000)
		return n / 7 - 3;
	return n * 2;
}

__attribute__((noinline)) int CAT(NAME, value)(int n)
{
	return scale(n) + 1;
}
