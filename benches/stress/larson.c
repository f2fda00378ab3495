/* larson: a server-like load (after Larson and Krishnan, "Memory Allocation for Long-Running
 * Server Applications"). Each thread owns a region of 1,000 slots and, again and again,
 * replaces the block in a random slot with a new block of random size (16..1000 bytes). The
 * work runs in 10 rounds of fresh threads, and each round hands every region to another
 * thread than the one that filled it (the original starts a successor thread that inherits
 * its predecessor's blocks), so most blocks are freed by another thread than the one that
 * allocated them. -n is the number of replacements per thread over all rounds. */
#include "stress.h"

#define SLOTS 1000
#define ROUNDS 10

struct worker {
    int thread, round;
    long replacements;
    void **region;
    uint64_t sum;
};

static void *replace(void *arg) {
    struct worker *w = arg;
    uint64_t rng = mix64((uint64_t)w->round << 32 | (uint64_t)w->thread);
    uint64_t tag = (uint64_t)w->round << 48 | (uint64_t)w->thread << 40;
    for (long i = 0; i < w->replacements; i++) {
        size_t k = between(&rng, 0, SLOTS - 1);
        w->sum += seal(w->region[k]);
        w->region[k] = stamped(between(&rng, 16, 1000), tag | (uint64_t)i);
    }
    return NULL;
}

int main(int argc, char **argv) {
    struct args a;
    parse_args(argc, argv, &a, cores(), 20000000);
    void **slots = xmalloc(sizeof(void *) * SLOTS * a.threads);
    struct worker *w = calloc(a.threads, sizeof *w);
    uint64_t rng = 7, sum = 0;
    double start = now();
    for (long i = 0; i < (long)SLOTS * a.threads; i++)
        slots[i] = stamped(between(&rng, 16, 1000), (uint64_t)i);
    for (int r = 0; r < ROUNDS; r++) {
        for (int t = 0; t < a.threads; t++) {
            w[t] = (struct worker){t, r + 1, a.iterations / ROUNDS, slots + (size_t)((t + r) % a.threads) * SLOTS, 0};
        }
        run_threads(a.threads, replace, w, sizeof *w);
        for (int t = 0; t < a.threads; t++)
            sum += w[t].sum;
    }
    for (long i = 0; i < (long)SLOTS * a.threads; i++)
        sum += seal(slots[i]);
    report("larson", &a, now() - start, sum);
    free(slots);
    free(w);
    return 0;
}
