/* Installs a seccomp filter that fails one system call (DENY) with EPERM
 * and allows every other, then answers "N" with a price and "s" with what
 * the denied call returns. */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static void sandbox(void)
{
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, DENY, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = sizeof code / sizeof code[0], .filter = code};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
		perror("seccomp");
		exit(1);
	}
}

__attribute__((noinline)) int price(int n)
{
	return n * 10;
}

int main(void)
{
	char line[64];
	sandbox();
	while (fgets(line, sizeof line, stdin)) {
		if (line[0] == 's') {
			/* the denied call: EPERM from the filter, EINVAL or EFAULT without it */
			long r = syscall(DENY, -1, -1, -1);
			printf("denied=%s\n", r == -1 && errno == EPERM ? "EPERM" : "no");
		} else {
			printf("price=%d\n", price(atoi(line)));
		}
		fflush(stdout);
	}
	return 0;
}
