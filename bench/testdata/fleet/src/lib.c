/* The library every benchmark process maps; the update changes fee. */
__attribute__((noipa)) int fee(int n)
{
	return n * 3 + 7;
}
