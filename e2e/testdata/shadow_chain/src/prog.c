/*
 * A tiny server: each input line N is a request on connection N (0..3),
 * answered with the connection's request count; "events" prints what the
 * update's custom code did (hooks append letters to events).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct conn {
	int id;
	int requests;
};

static struct conn *conns;
char events[64];

__attribute__((noipa)) int serve(struct conn *c)
{
	c->requests++;
	return c->requests;
}

int main(void)
{
	char line[64];
	conns = calloc(4, sizeof *conns);
	for (int i = 0; i < 4; i++)
		conns[i].id = i;
	while (fgets(line, sizeof line, stdin)) {
		if (strncmp(line, "events", 6) == 0) {
			printf("events=%s\n", events);
		} else {
			int i = atoi(line) & 3;
			printf("conn%d=%d\n", i, serve(&conns[i]));
		}
		fflush(stdout);
	}
	return 0;
}
