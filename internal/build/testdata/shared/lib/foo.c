int foo_value(void)
{
	return 42;
}

int foo_twice(void)
{
	return 2 * foo_value();
}
