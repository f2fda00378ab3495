/* cache-scratch: passive false sharing (after the cache-scratch test of the Hoard allocator,
 * Berger et al., "Hoard: A Scalable Memory Allocator for Multithreaded Applications"). The
 * main thread allocates one 8-byte object per thread, back to back, and hands them out; each
 * thread frees its object and then, -n times, allocates an object of the same size, writes
 * every byte of it 2,000 times and frees it. An allocator that gives a thread the memory
 * another thread's object came from makes the threads write to one cache line. */
#include "stress.h"

#define OBJECT 8
#define WRITES 2000

struct worker {
    char *first;
    long iterations;
    uint64_t sum;
};

static void *scratch(void *arg) {
    struct worker *w = arg;
    free(w->first);
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
        w[t] = (struct worker){xmalloc(OBJECT), a.iterations, 0};
    double start = now();
    run_threads(a.threads, scratch, w, sizeof *w);
    double seconds = now() - start;
    uint64_t sum = 0;
    for (int t = 0; t < a.threads; t++)
        sum += w[t].sum;
    report("cache-scratch", &a, seconds, sum);
    free(w);
    return 0;
}
