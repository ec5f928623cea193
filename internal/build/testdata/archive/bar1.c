int bar_one(void)
{
	return 1;
}
