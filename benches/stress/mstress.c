/* mstress: many live objects of mixed sizes, threads exchanging them (after the description of
 * mimalloc-bench's mstress). Each thread keeps 2,000 slots and repeats -n times: pick a slot
 * and either allocate a new object into it (50%: freeing the old one), free it (30%) or swap it
 * with a random slot of a global transfer array of 1,000 (20%), so objects move between
 * threads. Sizes: 90% 16..256 bytes, 9% up to 8 KiB, 1% up to 256 KiB. The work runs in 10
 * rounds of fresh threads; the transfer array carries objects from one round to the next.
 * Whoever frees an object adds what was stamped into it to the checksum, so the sum is the
 * same whichever thread frees it. */
#include <stdatomic.h>

#include "stress.h"

#define SLOTS 2000
#define TRANSFER 1000
#define ROUNDS 10

static _Atomic(void *) transfer[TRANSFER];

struct worker {
    int thread, round;
    long steps;
    uint64_t sum;
};

static size_t size_of(uint64_t *rng) {
    size_t r = between(rng, 0, 99);
    size_t size = between(rng, 16, r < 90 ? 256 : r < 99 ? 8192 : 262144);
    return size;
}

static void *stress(void *arg) {
    struct worker *w = arg;
    void **slots = calloc(SLOTS, sizeof(void *));
    uint64_t rng = mix64((uint64_t)w->round << 32 | (uint64_t)w->thread);
    uint64_t tag = (uint64_t)w->round << 48 | (uint64_t)w->thread << 40;
    for (long i = 0; i < w->steps; i++) {
        size_t k = between(&rng, 0, SLOTS - 1), what = between(&rng, 0, 9), size = size_of(&rng);
        if (what < 5) {
            if (slots[k])
                w->sum += seal(slots[k]);
            slots[k] = stamped(size, tag | (uint64_t)i);
        } else if (what < 8) {
            if (slots[k])
                w->sum += seal(slots[k]);
            slots[k] = NULL;
        } else {
            slots[k] = atomic_exchange(&transfer[between(&rng, 0, TRANSFER - 1)], slots[k]);
        }
    }
    for (int k = 0; k < SLOTS; k++)
        if (slots[k])
            w->sum += seal(slots[k]);
    free(slots);
    return NULL;
}

int main(int argc, char **argv) {
    struct args a;
    parse_args(argc, argv, &a, cores() * 2, 6000000);
    struct worker *w = calloc(a.threads, sizeof *w);
    uint64_t sum = 0;
    double start = now();
    for (int r = 0; r < ROUNDS; r++) {
        for (int t = 0; t < a.threads; t++)
            w[t] = (struct worker){t, r, a.iterations / ROUNDS, 0};
        run_threads(a.threads, stress, w, sizeof *w);
        for (int t = 0; t < a.threads; t++)
            sum += w[t].sum;
    }
    for (int k = 0; k < TRANSFER; k++)
        if (transfer[k])
            sum += seal(transfer[k]);
    report("mstress", &a, now() - start, sum);
    free(w);
    return 0;
}
