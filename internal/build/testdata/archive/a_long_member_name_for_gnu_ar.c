int bar_long(void)
{
	return 7;
}
