/* A long-running program linked against Debian's libcjson: each line read
 * is a query, answered with one line. "o NAME" looks NAME up in an object
 * (cJSON_GetObjectItemCaseSensitive), "a N" item N of an array
 * (cJSON_GetArrayItem). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

int main(void)
{
	cJSON *obj = cJSON_Parse("{\"name\":\"deb\",\"__secret\":\"hidden\"}");
	cJSON *arr = cJSON_Parse("[\"zero\",\"one\",\"two\"]");
	char line[256];

	if (obj == NULL || arr == NULL)
		return 1;
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof line, stdin) != NULL) {
		cJSON *item = NULL;
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "o ", 2) == 0)
			item = cJSON_GetObjectItemCaseSensitive(obj, line + 2);
		else if (strncmp(line, "a ", 2) == 0)
			item = cJSON_GetArrayItem(arr, atoi(line + 2));
		printf("%s\n", cJSON_IsString(item) ? item->valuestring : "none");
	}
	return 0;
}
