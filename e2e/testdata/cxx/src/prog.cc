// Answers "N" with twice N, or with the error that parsing N threw: C++
// exceptions thrown in, and unwinding through, code an update replaced.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <stdexcept>
#include <string>

__attribute__((noinline)) int parse(const std::string &s)
{
	int v = std::atoi(s.c_str());
	if (v < 0)
		throw std::runtime_error("negative");
	return v * 2;
}

int main()
{
	std::string line;
	while (std::getline(std::cin, line)) {
		try {
			std::printf("%d\n", parse(line));
		} catch (const std::exception &e) {
			std::printf("error: %s\n", e.what());
		}
		std::fflush(stdout);
	}
	return 0;
}
