/* glibc-thread: every thread runs the same tight loop on its own working set (after glibc's
 * benchtests/bench-malloc-thread): -n times, pick a random one of 1,024 slots, free the block
 * there and allocate one of random size (log-uniform, 16..4096 bytes). No block crosses
 * threads. */
#include "stress.h"

#define SLOTS 1024

struct worker {
    int id;
    long iterations;
    uint64_t sum;
};

/* Log-uniform in 16..4096: small sizes are the common ones. */
static size_t size_of(uint64_t *rng) {
    size_t bits = between(rng, 4, 11);
    return between(rng, (size_t)1 << bits, ((size_t)2 << bits) - 1);
}

static void *loop(void *arg) {
    struct worker *w = arg;
    void *slots[SLOTS] = {0};
    uint64_t rng = mix64(w->id + 100), tag = (uint64_t)w->id << 48;
    for (long i = 0; i < w->iterations; i++) {
        size_t k = between(&rng, 0, SLOTS - 1);
        if (slots[k])
            w->sum += seal(slots[k]);
        slots[k] = stamped(size_of(&rng), tag++);
    }
    for (int k = 0; k < SLOTS; k++)
        if (slots[k])
            w->sum += seal(slots[k]);
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
    report("glibc-thread", &a, seconds, sum);
    free(w);
    return 0;
}
