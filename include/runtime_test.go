package include

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// hammer exercises the shadow runtime from several threads at once: every
// thread makes, finds and frees shadows of shared objects; the counts at
// the end must add up (a lost update or a double free shows).
const hammer = `#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "livesplice.h"

#define OBJS 64
#define THREADS 4
#define ROUNDS 20000

static char objs[OBJS];
static int made, freed;

static int ctor(void *obj, void *shadow, void *data)
{
	(void)data;
	if (*(long *)shadow != 0)
		return 1; /* not zeroed */
	*(void **)shadow = obj;
	__atomic_add_fetch(&made, 1, __ATOMIC_RELAXED);
	return 0;
}

static void dtor(void *obj, void *shadow)
{
	if (*(void **)shadow != obj)
		fprintf(stderr, "shadow of %p holds %p\n", obj, *(void **)shadow);
	__atomic_add_fetch(&freed, 1, __ATOMIC_RELAXED);
}

static void *run(void *arg)
{
	unsigned long seed = (unsigned long)arg * 2654435761u + 1;
	for (int i = 0; i < ROUNDS; i++) {
		seed = seed * 6364136223846793005ul + 1442695040888963407ul;
		void *obj = &objs[(seed >> 33) % OBJS];
		unsigned long id = 1 + (seed >> 20) % 2;
		switch ((seed >> 40) % 3) {
		case 0:
			if (!livesplice_shadow_get_or_alloc(obj, id, 64, ctor, NULL))
				fprintf(stderr, "alloc failed\n");
			break;
		case 1: {
			void **s = livesplice_shadow_get(obj, id);
			if (s && *s != obj)
				fprintf(stderr, "wrong shadow\n");
			break;
		}
		default:
			livesplice_shadow_free(obj, id, dtor);
		}
	}
	return NULL;
}

int main(void)
{
	pthread_t t[THREADS];
	for (long i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, run, (void *)i);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	livesplice_shadow_free_all(1, dtor);
	livesplice_shadow_free_all(2, dtor);
	for (int i = 0; i < OBJS; i++)
		if (livesplice_shadow_get(&objs[i], 1) || livesplice_shadow_get(&objs[i], 2))
			fprintf(stderr, "shadow left after free_all\n");
	printf("made=%d freed=%d\n", made, freed);
	return made == freed && made > 0 ? 0 : 1;
}
`

func TestShadowRuntimeThreads(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string][]byte{HeaderName: Header, ShadowRuntimeName: ShadowRuntime, "hammer.c": []byte(hammer)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "hammer")
	cc := exec.Command("gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-o", bin, "hammer.c", ShadowRuntimeName)
	cc.Dir = dir
	if out, err := cc.CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).CombinedOutput()
	if err != nil || strings.Count(string(out), "\n") != 1 {
		t.Fatalf("hammer: %v\n%s", err, out)
	}
}
