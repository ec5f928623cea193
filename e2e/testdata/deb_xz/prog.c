/* A long-running program linked against Debian's liblzma: each line read
 * makes it compress a buffer with preset 1 (a 1 MiB dictionary) and
 * decode it again, and answer with the decoder's return code. The decoder
 * goes through lzma_lz_decoder_init, a hidden function of liblzma. */
#include <stdio.h>
#include <string.h>
#include <lzma.h>

int main(void)
{
	static uint8_t in[4096], packed[8192], out[4096];
	char line[64];
	size_t n = 0;

	memset(in, 'x', sizeof in);
	if (lzma_easy_buffer_encode(1, LZMA_CHECK_CRC32, NULL, in, sizeof in, packed, &n, sizeof packed) != LZMA_OK)
		return 1;
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof line, stdin) != NULL) {
		uint64_t limit = UINT64_MAX;
		size_t in_pos = 0, out_pos = 0;
		lzma_ret ret = lzma_stream_buffer_decode(&limit, 0, NULL, packed, &in_pos, n, out, &out_pos, sizeof out);
		printf("ret=%d\n", (int)ret);
	}
	return 0;
}
