// A worker thread calls work() in a loop; work() sleeps in nanosleep and
// then returns (even calls) or throws (odd calls), so the thread is inside
// work() almost all the time and leaves it both ways. While the safety
// check sends work's return through a return stub, the exception must
// find its way through the stub to the catch below (libgcc is handed the
// stubs' call frame information). main answers queries with
// "value=<what work returned last> caught=<exceptions caught>".
#include <atomic>
#include <cstdio>
#include <ctime>
#include <pthread.h>
#include <stdexcept>

static std::atomic<int> last;
static std::atomic<long> calls, caught;

__attribute__((noinline)) int work(int x)
{
	struct timespec ts = {0, 5 * 1000 * 1000};
	nanosleep(&ts, nullptr);
	if (x % 2)
		throw std::runtime_error("odd");
	return 1;
}

static void *worker(void *)
{
	for (int i = 0;; i++) {
		try {
			last = work(i);
		} catch (const std::exception &) {
			caught++;
		}
		calls++;
	}
	return nullptr;
}

int main()
{
	pthread_t t;
	char line[64];
	pthread_create(&t, nullptr, worker, nullptr);
	while (fgets(line, sizeof line, stdin)) {
		long before = calls;
		while (calls < before + 3) {
			struct timespec ts = {0, 1000 * 1000};
			nanosleep(&ts, nullptr);
		}
		printf("value=%d caught=%ld\n", last.load(), caught.load());
		fflush(stdout);
	}
	return 0;
}
