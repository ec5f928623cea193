/*
 * livesplice.h: custom code in livesplice updates (docs/custom-code.md).
 *
 * livesplice's create step puts this header on the include path of the
 * pre and post builds, so a patch can simply #include <livesplice.h>.
 *
 * Hooks: each macro records a pointer to fn in a section of its own
 * (.livesplice.hook.<kind>.<n>), which create turns into the update's list
 * of hooks, in the order they appear. livesplice calls them in the target
 * with its other threads stopped (POST_* hooks: with them running), on one
 * of the target's own threads, with a time limit:
 *
 *   LIVESPLICE_PRE_APPLY(fn)    int fn(void)  before anything is changed; non-zero vetoes
 *   LIVESPLICE_CHECK_APPLY(fn)  int fn(void)  stopped, safe, before the commit; non-zero vetoes
 *   LIVESPLICE_APPLY(fn)        void fn(void) stopped, right after the new code took over
 *   LIVESPLICE_POST_APPLY(fn)   void fn(void) after the target resumed
 *   LIVESPLICE_FAIL_APPLY(fn)   void fn(void) when the apply was abandoned after PRE_APPLY
 *   and the same five for undo: LIVESPLICE_PRE_UNDO ... LIVESPLICE_FAIL_UNDO.
 *
 * Shadow variables attach new fields to existing objects by address
 * (kernel livepatch's klp_shadow_*): thread-safe, usable from patched code
 * and hooks. New shadows are zeroed before ctor runs; ctor runs under the
 * table's lock (it must not call the livesplice_shadow_* functions) and a
 * non-zero return from it fails the allocation (NULL).
 *
 * LIVESPLICE_LAYOUT_HANDLED(type) tells create that a change of type's
 * layout is taken care of by the update's custom code (shadow variables,
 * hooks), so existing objects of the old layout are not a problem.
 */
#ifndef LIVESPLICE_H
#define LIVESPLICE_H

#ifdef __KERNEL__
/*
 * Kernel updates (create --kernel): the hooks become the klp_object's
 * livepatch callbacks (create generates them; only PRE_APPLY, POST_APPLY,
 * FAIL_APPLY, PRE_UNDO and POST_UNDO can be expressed, the others are
 * refused), and the shadow functions are the kernel's klp_shadow_*
 * (allocations with GFP_ATOMIC, so they may be called in any context).
 */
#include <linux/gfp.h>
#include <linux/livepatch.h>

typedef int (*livesplice_check_fn)(void);
typedef void (*livesplice_action_fn)(void);

static inline void *livesplice_shadow_get(void *obj, unsigned long id)
{
	return klp_shadow_get(obj, id);
}

static inline void *livesplice_shadow_get_or_alloc(void *obj, unsigned long id, size_t size,
		int (*ctor)(void *obj, void *shadow, void *data), void *data)
{
	return klp_shadow_get_or_alloc(obj, id, size, GFP_ATOMIC, ctor, data);
}

static inline void livesplice_shadow_free(void *obj, unsigned long id,
		void (*dtor)(void *obj, void *shadow))
{
	klp_shadow_free(obj, id, dtor);
}

static inline void livesplice_shadow_free_all(unsigned long id,
		void (*dtor)(void *obj, void *shadow))
{
	klp_shadow_free_all(id, dtor);
}
#else /* !__KERNEL__ */
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int (*livesplice_check_fn)(void);
typedef void (*livesplice_action_fn)(void);

/* Weak: the post build links without the runtime, which create adds to
 * the update itself. */
__attribute__((weak)) void *livesplice_shadow_get(void *obj, unsigned long id);
__attribute__((weak)) void *livesplice_shadow_get_or_alloc(void *obj, unsigned long id, size_t size,
		int (*ctor)(void *obj, void *shadow, void *data), void *data);
__attribute__((weak)) void livesplice_shadow_free(void *obj, unsigned long id,
		void (*dtor)(void *obj, void *shadow));
__attribute__((weak)) void livesplice_shadow_free_all(unsigned long id,
		void (*dtor)(void *obj, void *shadow));

#ifdef __cplusplus
}
#endif
#endif /* __KERNEL__ */

/* Two levels, so that __COUNTER__ is expanded before it is pasted. */
#define LIVESPLICE_HOOK__(kind, type, fn, n) \
	static type const livesplice_hook_##kind##_##n \
	__attribute__((used, section(".livesplice.hook." #kind "." #n))) = (fn)
#define LIVESPLICE_HOOK_(kind, type, fn, n) LIVESPLICE_HOOK__(kind, type, fn, n)

#define LIVESPLICE_PRE_APPLY(fn)   LIVESPLICE_HOOK_(pre_apply, livesplice_check_fn, fn, __COUNTER__)
#define LIVESPLICE_CHECK_APPLY(fn) LIVESPLICE_HOOK_(check_apply, livesplice_check_fn, fn, __COUNTER__)
#define LIVESPLICE_APPLY(fn)       LIVESPLICE_HOOK_(apply, livesplice_action_fn, fn, __COUNTER__)
#define LIVESPLICE_POST_APPLY(fn)  LIVESPLICE_HOOK_(post_apply, livesplice_action_fn, fn, __COUNTER__)
#define LIVESPLICE_FAIL_APPLY(fn)  LIVESPLICE_HOOK_(fail_apply, livesplice_action_fn, fn, __COUNTER__)
#define LIVESPLICE_PRE_UNDO(fn)    LIVESPLICE_HOOK_(pre_undo, livesplice_check_fn, fn, __COUNTER__)
#define LIVESPLICE_CHECK_UNDO(fn)  LIVESPLICE_HOOK_(check_undo, livesplice_check_fn, fn, __COUNTER__)
#define LIVESPLICE_UNDO(fn)        LIVESPLICE_HOOK_(undo, livesplice_action_fn, fn, __COUNTER__)
#define LIVESPLICE_POST_UNDO(fn)   LIVESPLICE_HOOK_(post_undo, livesplice_action_fn, fn, __COUNTER__)
#define LIVESPLICE_FAIL_UNDO(fn)   LIVESPLICE_HOOK_(fail_undo, livesplice_action_fn, fn, __COUNTER__)

#define LIVESPLICE_LAYOUT_HANDLED__(type, n) \
	static const char livesplice_layout_handled_##n[] \
	__attribute__((used, section(".livesplice.layout_handled." #n))) = #type
#define LIVESPLICE_LAYOUT_HANDLED_(type, n) LIVESPLICE_LAYOUT_HANDLED__(type, n)
#define LIVESPLICE_LAYOUT_HANDLED(type) LIVESPLICE_LAYOUT_HANDLED_(type, __COUNTER__)

#endif /* LIVESPLICE_H */
