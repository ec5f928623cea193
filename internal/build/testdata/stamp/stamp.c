const char *stamp(void)
{
	return __FILE__ " built " __DATE__ " " __TIME__;
}
