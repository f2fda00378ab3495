/* alloc-test: a live set that grows and shrinks at random (after the description of
 * Ignatchenko's alloc-test, "Testing Memory Allocators ... While Trying to Simulate Real-World
 * Loads"). Each thread keeps up to 65,536 blocks of random sizes 1..1024 bytes; -n times it
 * either allocates a block into a random free place (more likely while the set is small) or
 * frees a random live block (more likely while it is large); at the end it frees the rest in
 * random order. Blocks may be smaller than a stamp, so each thread keeps the sizes. */
#include "stress.h"

#define LIVE 65536
#define MAX_SIZE 1024

struct worker {
    int id;
    long iterations;
    uint64_t sum;
};

struct block {
    unsigned char *p;
    size_t size;
};

static void fill(struct block *b, uint64_t *rng, uint64_t tag) {
    b->size = between(rng, 1, MAX_SIZE);
    b->p = xmalloc(b->size);
    b->p[0] = (unsigned char)tag;
    b->p[b->size - 1] = (unsigned char)(tag >> 8);
}

static uint64_t drop(struct block *b) {
    uint64_t v = mix64(b->p[0] | (uint64_t)b->p[b->size - 1] << 8 | (uint64_t)b->size << 16);
    free(b->p);
    b->p = NULL;
    return v;
}

static void *loop(void *arg) {
    struct worker *w = arg;
    struct block *live = calloc(LIVE, sizeof *live);
    size_t n = 0; /* live[0..n) hold blocks */
    uint64_t rng = mix64(w->id + 200);
    for (long i = 0; i < w->iterations; i++) {
        if (between(&rng, 0, LIVE) >= n) {
            if (n == LIVE)
                continue;
            size_t at = between(&rng, 0, n);
            live[n++] = live[at];
            fill(&live[at], &rng, (uint64_t)i);
        } else {
            size_t at = between(&rng, 0, n - 1);
            w->sum += drop(&live[at]);
            live[at] = live[--n];
        }
    }
    for (; n > 0; n--) {
        size_t at = between(&rng, 0, n - 1);
        w->sum += drop(&live[at]);
        live[at] = live[n - 1];
    }
    free(live);
    return NULL;
}

int main(int argc, char **argv) {
    struct args a;
    parse_args(argc, argv, &a, cores(), 30000000);
    struct worker *w = calloc(a.threads, sizeof *w);
    for (int t = 0; t < a.threads; t++)
        w[t] = (struct worker){t, a.iterations, 0};
    double start = now();
    run_threads(a.threads, loop, w, sizeof *w);
    double seconds = now() - start;
    uint64_t sum = 0;
    for (int t = 0; t < a.threads; t++)
        sum += w[t].sum;
    report("alloc-test", &a, seconds, sum);
    free(w);
    return 0;
}
