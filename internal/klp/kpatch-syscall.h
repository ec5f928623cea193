/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kpatch-syscall.h as livesplice provides it (x86-64, Linux 5.7 and
 * later): KPATCH_SYSCALL_DEFINE1..6(name, type, arg, ...) define a system
 * call like SYSCALL_DEFINEn, except that its body goes into a function of
 * another name (__livesplice_do_sys_<name>). The kernel's body,
 * __do_sys_<name>, is `static inline` and so has no ftrace site when the
 * compiler emits it out of line: livepatch cannot replace it. Under the
 * new name the body is a new function of the update, called from
 * __x64_sys_<name> (and __ia32_sys_<name>), which have ftrace sites and
 * are the functions the update replaces. The syscall's trace metadata is
 * the kernel's own (SYSCALL_METADATA), unchanged, so it is no change.
 * Written for livesplice (docs/kernel.md).
 */
#ifndef __KPATCH_SYSCALL_H_
#define __KPATCH_SYSCALL_H_

#include "kpatch-macros.h"
#include <linux/syscalls.h>
#include <linux/version.h>

#if !defined(CONFIG_X86_64) || LINUX_VERSION_CODE < KERNEL_VERSION(5, 7, 0)
#error "livesplice's kpatch-syscall.h supports x86-64 kernels from 5.7 on"
#endif

#define KPATCH_SYSCALL_DEFINE1(name, ...) KPATCH_SYSCALL_DEFINEx(1, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE2(name, ...) KPATCH_SYSCALL_DEFINEx(2, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE3(name, ...) KPATCH_SYSCALL_DEFINEx(3, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE4(name, ...) KPATCH_SYSCALL_DEFINEx(4, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE5(name, ...) KPATCH_SYSCALL_DEFINEx(5, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE6(name, ...) KPATCH_SYSCALL_DEFINEx(6, _##name, __VA_ARGS__)

#define KPATCH_SYSCALL_DEFINEx(x, sname, ...)				\
	SYSCALL_METADATA(sname, x, __VA_ARGS__)				\
	__LIVESPLICE_SYSCALL_DEFINEx(x, sname, __VA_ARGS__)

/* arch/x86/include/asm/syscall_wrapper.h's __SYSCALL_DEFINEx, body renamed. */
#define __LIVESPLICE_SYSCALL_DEFINEx(x, name, ...)			\
	static long __se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__));	\
	static inline long __livesplice_do_sys##name(__MAP(x, __SC_DECL, __VA_ARGS__)); \
	__X64_SYS_STUBx(x, name, __VA_ARGS__)				\
	__IA32_SYS_STUBx(x, name, __VA_ARGS__)				\
	static long __se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__))	\
	{								\
		long ret = __livesplice_do_sys##name(__MAP(x, __SC_CAST, __VA_ARGS__)); \
		__MAP(x, __SC_TEST, __VA_ARGS__);			\
		__PROTECT(x, ret, __MAP(x, __SC_ARGS, __VA_ARGS__));	\
		return ret;						\
	}								\
	static inline long __livesplice_do_sys##name(__MAP(x, __SC_DECL, __VA_ARGS__))

#endif /* __KPATCH_SYSCALL_H_ */
