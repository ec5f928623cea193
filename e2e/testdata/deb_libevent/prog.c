/* A long-running program linked against Debian's libevent_extra: each
 * line read is a URI, answered with "ok HOST" or "bad" as
 * evhttp_uri_parse (http.c, whose static scheme_ok and parse_authority
 * check the scheme and the authority) sees it. */
#include <stdio.h>
#include <string.h>
#include <event2/http.h>

int main(void)
{
	char line[512];

	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof line, stdin) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		struct evhttp_uri *u = evhttp_uri_parse(line);
		if (u == NULL) {
			printf("bad\n");
			continue;
		}
		const char *host = evhttp_uri_get_host(u);
		printf("ok %s\n", host ? host : "-");
		evhttp_uri_free(u);
	}
	return 0;
}
