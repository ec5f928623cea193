/*
 * The shadow-variable runtime of livesplice updates (livesplice.h).
 * livesplice create compiles it into an update whose code calls
 * livesplice_shadow_*; it then lives in the target with the update.
 *
 * A hash table of (object address, id) -> shadow, guarded by a spinlock
 * (it needs no thread library, and a hook that finds it held by a thread
 * stopped by livesplice runs into the hook time limit, not a deadlock).
 */
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>

#include "livesplice.h"

struct livesplice_shadow {
	struct livesplice_shadow *next;
	void *obj;
	unsigned long id;
	/* the shadow data follows, aligned for any type */
	_Alignas(16) unsigned char data[];
};

#define LIVESPLICE_BUCKETS 1024

static struct livesplice_shadow *livesplice_shadow_table[LIVESPLICE_BUCKETS];
static int livesplice_shadow_locked;

static void lock(void)
{
	while (__atomic_exchange_n(&livesplice_shadow_locked, 1, __ATOMIC_ACQUIRE))
		sched_yield();
}

static void unlock(void)
{
	__atomic_store_n(&livesplice_shadow_locked, 0, __ATOMIC_RELEASE);
}

static unsigned long bucket(void *obj, unsigned long id)
{
	unsigned long h = ((unsigned long)obj >> 4) ^ (id * 0x9e3779b97f4a7c15ul);
	h ^= h >> 29;
	return h % LIVESPLICE_BUCKETS;
}

static struct livesplice_shadow *find(void *obj, unsigned long id)
{
	struct livesplice_shadow *s;
	for (s = livesplice_shadow_table[bucket(obj, id)]; s; s = s->next)
		if (s->obj == obj && s->id == id)
			return s;
	return NULL;
}

void *livesplice_shadow_get(void *obj, unsigned long id)
{
	struct livesplice_shadow *s;
	lock();
	s = find(obj, id);
	unlock();
	return s ? s->data : NULL;
}

void *livesplice_shadow_get_or_alloc(void *obj, unsigned long id, size_t size,
		int (*ctor)(void *obj, void *shadow, void *data), void *data)
{
	struct livesplice_shadow *s, *n;
	if (size > (size_t)-1 - sizeof *n)
		return NULL;
	/* The common case, an existing shadow, costs one lookup: no malloc on
	 * a hot path. */
	lock();
	s = find(obj, id);
	unlock();
	if (s)
		return s->data;
	/* Allocated outside the lock: malloc may take its own locks. */
	n = calloc(1, sizeof *n + size);
	if (!n)
		return NULL;
	n->obj = obj;
	n->id = id;
	lock();
	s = find(obj, id);
	if (s) {
		unlock();
		free(n);
		return s->data;
	}
	if (ctor && ctor(obj, n->data, data)) {
		unlock();
		free(n);
		return NULL;
	}
	n->next = livesplice_shadow_table[bucket(obj, id)];
	livesplice_shadow_table[bucket(obj, id)] = n;
	unlock();
	return n->data;
}

void livesplice_shadow_free(void *obj, unsigned long id, void (*dtor)(void *obj, void *shadow))
{
	struct livesplice_shadow **p, *s = NULL;
	lock();
	for (p = &livesplice_shadow_table[bucket(obj, id)]; *p; p = &(*p)->next) {
		if ((*p)->obj == obj && (*p)->id == id) {
			s = *p;
			*p = s->next;
			break;
		}
	}
	unlock();
	if (s) {
		if (dtor)
			dtor(s->obj, s->data);
		free(s);
	}
}

void livesplice_shadow_free_all(unsigned long id, void (*dtor)(void *obj, void *shadow))
{
	struct livesplice_shadow *gone = NULL, **p, *s;
	unsigned long i;
	lock();
	for (i = 0; i < LIVESPLICE_BUCKETS; i++) {
		for (p = &livesplice_shadow_table[i]; *p;) {
			s = *p;
			if (s->id == id) {
				*p = s->next;
				s->next = gone;
				gone = s;
			} else {
				p = &s->next;
			}
		}
	}
	unlock();
	while (gone) {
		s = gone;
		gone = s->next;
		if (dtor)
			dtor(s->obj, s->data);
		free(s);
	}
}
