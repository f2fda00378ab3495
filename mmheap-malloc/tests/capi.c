/* The C API and the malloc family through libmmheap_malloc.so, from C. Prints "ok" last. */
#include "mmheap.h"
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: %s (%s)\n", __FILE__, __LINE__, #c, \
    mmheap_last_error() ? mmheap_last_error() : "no error"); exit(1); } } while (0)

enum { N = 20000 };
static void *slots[N];

static void *consumer(void *arg) {
    (void)arg;
    for (int i = 0; i < N; i++) {
        unsigned char *p = slots[i];
        size_t n = 1 + (size_t)(i * 7919) % 3000;
        for (size_t k = 0; k < n; k++) CHECK(p[k] == (unsigned char)i);
        free(p);
    }
    return NULL;
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    /* malloc is ours: a 24-byte request gets the 32-byte class (glibc would give 24). */
    void *small = malloc(24);
    CHECK(small && (uintptr_t)small % 16 == 0 && malloc_usable_size(small) == 32);
    free(small);

    /* Blocks freed by another thread. */
    for (int i = 0; i < N; i++) {
        size_t n = 1 + (size_t)(i * 7919) % 3000;
        slots[i] = malloc(n);
        memset(slots[i], (unsigned char)i, n);
    }
    pthread_t t;
    CHECK(pthread_create(&t, NULL, consumer, NULL) == 0 && pthread_join(t, NULL) == 0);

    /* calloc, realloc, alignment. */
    unsigned char *z = calloc(1000, 10);
    for (int i = 0; i < 10000; i++) CHECK(z[i] == 0);
    memset(z, 5, 10000);
    z = realloc(z, 1 << 20);
    for (int i = 0; i < 10000; i++) CHECK(z[i] == 5);
    z = realloc(z, 100);
    CHECK(z[99] == 5);
    free(z);
    for (size_t a = 8; a <= (1 << 16); a <<= 1) {
        void *p = NULL;
        CHECK(posix_memalign(&p, a, 100) == 0 && (uintptr_t)p % a == 0);
        free(p);
        p = aligned_alloc(a, 3 * a);
        CHECK(p && (uintptr_t)p % a == 0);
        free(p);
    }
    CHECK(posix_memalign(&small, 24, 8) != 0);
    volatile size_t huge = SIZE_MAX;
    CHECK(calloc(huge / 2, 4) == NULL);
    CHECK(malloc(huge) == NULL);
    CHECK(malloc(huge - 64) == NULL);

    /* fork: the child allocates. */
    pid_t pid = fork();
    if (pid == 0) {
        char *s = malloc(64);
        strcpy(s, "child");
        free(s);
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* Modern API over a store: allocate, write, root, reopen, read. */
    mmheap_manager *s = mmheap_store_create(argv[1], 0);
    CHECK(s);
    mmheap_block *b = mmheap_alloc_with(s, 100);
    CHECK(b && mmheap_block_len(b) == 100);
    char *w = mmheap_block_data_mut(b);
    CHECK(w);
    strcpy(w, "kept in the store");
    CHECK(mmheap_set_root(s, "greeting", b) == 0);
    CHECK(mmheap_block_data_mut(b) == NULL); /* rooted: read-only now */
    mmheap_handle h = mmheap_block_handle(b);
    mmheap_block *again = mmheap_resolve(s, h);
    CHECK(again && strcmp(mmheap_block_data(again), "kept in the store") == 0);
    mmheap_free_with(again);
    mmheap_free_with(b);
    CHECK(mmheap_root(s, "absent") == NULL && mmheap_set_root(s, "", b) == -1);
    mmheap_manager_release(s);
    CHECK(mmheap_store_create(argv[1], 0) == NULL && mmheap_last_error());

    mmheap_manager *o = mmheap_store_open(argv[1]);
    CHECK(o);
    mmheap_block *r = mmheap_root(o, "greeting");
    CHECK(r && strcmp(mmheap_block_data(r), "kept in the store") == 0);
    mmheap_free_with(r);
    mmheap_handle forged = { h.offset + 16, h.generation };
    CHECK(mmheap_resolve(o, forged) == NULL);
    mmheap_manager_release(o);

    /* NULL arguments are errors, not crashes; every call clears the last error. */
    CHECK(mmheap_alloc_with(NULL, 8) == NULL && strstr(mmheap_last_error(), "null manager"));
    CHECK(mmheap_block_len(NULL) == 0 && mmheap_block_data(NULL) == NULL && mmheap_block_data_mut(NULL) == NULL);
    CHECK(mmheap_block_clone(NULL) == NULL && mmheap_block_handle(NULL).offset == 0);
    CHECK(mmheap_resolve(NULL, h) == NULL && mmheap_root(NULL, "x") == NULL);
    mmheap_manager *o2 = mmheap_store_open(argv[1]);
    CHECK(o2 && mmheap_set_root(o2, "x", NULL) == -1 && mmheap_last_error());
    CHECK(mmheap_root(o2, "absent") == NULL && mmheap_last_error() == NULL);
    mmheap_manager_release(o2);
    /* memalign rounds an alignment that is not a power of two up, as glibc's does. */
    void *m24 = memalign(24, 7);
    CHECK(m24 && (uintptr_t)m24 % 32 == 0);
    free(m24);

    /* The in-process manager through the same calls; legacy calls. */
    mmheap_manager *d = mmheap_default();
    mmheap_block *x = mmheap_alloc_with(d, 5000);
    CHECK(x && mmheap_block_data_mut(x));
    mmheap_free_with(x);
    CHECK(mmheap_root(d, "x") == NULL && mmheap_last_error());
    mmheap_manager_release(d);
    char *l = mmheap_alloc(10);
    l = mmheap_realloc(l, 10000);
    mmheap_free(l);
    puts("ok");
    return 0;
}
