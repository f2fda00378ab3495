/* cache-thrash: active false sharing (after the cache-thrash test of the Hoard allocator,
 * Berger et al., "Hoard: A Scalable Memory Allocator for Multithreaded Applications"). Each
 * thread, -n times, allocates an 8-byte object, writes every byte of it 2,000 times and frees
 * it. An allocator that serves threads running at the same time from one cache line makes
 * them write to the same line. */
#include "stress.h"

#define OBJECT 8
#define WRITES 2000

struct worker {
    long iterations;
    uint64_t sum;
};

static void *thrash(void *arg) {
    struct worker *w = arg;
    for (long i = 0; i < w->iterations; i++) {
        w->sum += write_object(i, OBJECT, WRITES);
    }
    return NULL;
}

int main(int argc, char **argv) {
    struct args a;
    parse_args(argc, argv, &a, cores(), 200000);
    struct worker *w = calloc(a.threads, sizeof *w);
    for (int t = 0; t < a.threads; t++)
        w[t] = (struct worker){a.iterations, 0};
    double start = now();
    run_threads(a.threads, thrash, w, sizeof *w);
    double seconds = now() - start;
    uint64_t sum = 0;
    for (int t = 0; t < a.threads; t++)
        sum += w[t].sum;
    report("cache-thrash", &a, seconds, sum);
    free(w);
    return 0;
}
