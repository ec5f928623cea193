// Answers "N" with the value a Counter built from N holds: its constructor
// is one function under two names (the complete and base object
// constructors, C1 and C2, share one address), which the update replaces.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

struct Counter {
	Counter(int n);
	int v;
};

__attribute__((noipa)) Counter::Counter(int n)
{
	v = n * 2;
}

struct Derived : Counter {
	Derived(int n) : Counter(n + 1) {}
};

__attribute__((noinline)) int both(int n)
{
	Counter c(n);
	Derived d(n);
	return c.v * 1000 + d.v;
}

int main()
{
	std::string line;
	while (std::getline(std::cin, line)) {
		std::printf("%d\n", both(std::atoi(line.c_str())));
		std::fflush(stdout);
	}
	return 0;
}
