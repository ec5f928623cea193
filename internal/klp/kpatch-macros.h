/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kpatch-macros.h as livesplice provides it: patches written for
 * kpatch-build that include "kpatch-macros.h" build unchanged with
 * `livesplice create --kernel`. The callback macros leave a pointer to the
 * function in a .livesplice.klp.<kind> section; create declares it in the
 * klp_object's callbacks. Written for livesplice (docs/kernel.md).
 */
#ifndef __KPATCH_MACROS_H_
#define __KPATCH_MACROS_H_

#include <linux/compiler.h>
#include <linux/livepatch.h>
#include <linux/printk.h>

typedef struct klp_object patch_object;

typedef int (*livesplice_klp_pre_patch_t)(patch_object *);
typedef void (*livesplice_klp_post_patch_t)(patch_object *);
typedef void (*livesplice_klp_pre_unpatch_t)(patch_object *);
typedef void (*livesplice_klp_post_unpatch_t)(patch_object *);

#define __livesplice_klp_callback(kind, fn) \
	static livesplice_klp_##kind##_t __used __section(".livesplice.klp." #kind) \
		__UNIQUE_ID(livesplice_klp_##kind) = (fn)

#define KLP_PRE_PATCH_CALLBACK(fn) __livesplice_klp_callback(pre_patch, fn)
#define KLP_POST_PATCH_CALLBACK(fn) __livesplice_klp_callback(post_patch, fn)
#define KLP_PRE_UNPATCH_CALLBACK(fn) __livesplice_klp_callback(pre_unpatch, fn)
#define KLP_POST_UNPATCH_CALLBACK(fn) __livesplice_klp_callback(post_unpatch, fn)

/* Older spellings. */
#define KPATCH_PRE_PATCH_CALLBACK(fn) KLP_PRE_PATCH_CALLBACK(fn)
#define KPATCH_POST_PATCH_CALLBACK(fn) KLP_POST_PATCH_CALLBACK(fn)
#define KPATCH_PRE_UNPATCH_CALLBACK(fn) KLP_PRE_UNPATCH_CALLBACK(fn)
#define KPATCH_POST_UNPATCH_CALLBACK(fn) KLP_POST_UNPATCH_CALLBACK(fn)

/*
 * Hints for kpatch-build's differ. livesplice's differ needs none of them:
 * they compile to nothing it looks at.
 */
#define KPATCH_IGNORE_SECTION(sec) \
	static const char *__used __section(".livesplice.klp.ignore") __UNIQUE_ID(livesplice_ignore_) = (sec)
#define KPATCH_IGNORE_FUNCTION(fn) \
	static void *__used __section(".livesplice.klp.ignore") __UNIQUE_ID(livesplice_ignore_) = (void *)(fn)
#define KPATCH_IGNORE_STATIC(name)
#define KPATCH_FORCE_UNSAFE(fn)

#define KPATCH_PRINTK(fmt, ...) printk(fmt, ##__VA_ARGS__)

#endif /* __KPATCH_MACROS_H_ */
