/* Shared by the stress programs: arguments, a deterministic generator, a clock, checked
 * allocation and the report line that scripts/bench-programs reads.
 *
 * Every program takes  [-t threads] [-n iterations] [-s scale]  (scale multiplies the default
 * iterations; -n overrides it) and prints one line ending in "checksum=<hex>". A checksum
 * depends only on the arguments, never on the allocator or on thread timing. */
#ifndef STRESS_H
#define STRESS_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct args {
    int threads;
    long iterations;
};

static inline void parse_args(int argc, char **argv, struct args *a, int default_threads,
                              long default_iterations) {
    double scale = 1.0;
    long iterations = 0;
    int c;
    a->threads = default_threads;
    while ((c = getopt(argc, argv, "t:n:s:")) != -1) {
        switch (c) {
        case 't': a->threads = atoi(optarg); break;
        case 'n': iterations = atol(optarg); break;
        case 's': scale = atof(optarg); break;
        default:
            fprintf(stderr, "usage: %s [-t threads] [-n iterations] [-s scale]\n", argv[0]);
            exit(2);
        }
    }
    if (a->threads < 1 || scale <= 0) {
        fprintf(stderr, "%s: threads must be >= 1 and scale > 0\n", argv[0]);
        exit(2);
    }
    a->iterations = iterations > 0 ? iterations : (long)(default_iterations * scale);
    if (a->iterations < 1)
        a->iterations = 1;
}

/* The machine's cores: the default thread count of the multi-threaded programs. */
static inline int cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* splitmix64: the same sequence on every allocator. */
static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t next(uint64_t *state) {
    *state += 0x9e3779b97f4a7c15ULL;
    return mix64(*state);
}

/* Uniform in [lo, hi]. */
static inline size_t between(uint64_t *state, size_t lo, size_t hi) {
    return lo + (size_t)(((unsigned __int128)next(state) * (hi - lo + 1)) >> 64);
}

static inline double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline void *xmalloc(size_t size) {
    void *p = malloc(size);
    if (!p) {
        fprintf(stderr, "malloc(%zu) failed\n", size);
        exit(3);
    }
    return p;
}

/* A block of at least 16 bytes stamped with a tag: the first 8 bytes hold the tag, the next 8
 * the size, the last byte (past the first 16) the tag's low byte. `seal` checks the last byte,
 * returns what the block adds to a checksum and frees it. */
static inline void *stamped(size_t size, uint64_t tag) {
    unsigned char *p = xmalloc(size);
    uint64_t size64 = size;
    memcpy(p, &tag, 8);
    memcpy(p + 8, &size64, 8);
    if (size > 16)
        p[size - 1] = (unsigned char)tag;
    return p;
}

static inline uint64_t seal(void *block) {
    unsigned char *p = block;
    uint64_t tag, size;
    memcpy(&tag, p, 8);
    memcpy(&size, p + 8, 8);
    if (size < 16 || (size > 16 && p[size - 1] != (unsigned char)tag)) {
        fprintf(stderr, "block %p (tag %llx, %llu bytes) was overwritten\n", block,
                (unsigned long long)tag, (unsigned long long)size);
        exit(4);
    }
    free(block);
    return mix64(tag ^ size << 40);
}

/* Runs fn(arg + i * size) on n threads and waits for them all. */
static inline void run_threads(int n, void *(*fn)(void *), void *arg, size_t size) {
    pthread_t *ids = xmalloc(sizeof(pthread_t) * n);
    for (int i = 0; i < n; i++)
        if (pthread_create(&ids[i], NULL, fn, (char *)arg + i * size)) {
            perror("pthread_create");
            exit(3);
        }
    for (int i = 0; i < n; i++)
        pthread_join(ids[i], NULL);
    free(ids);
}

static inline void report(const char *name, const struct args *a, double seconds, uint64_t checksum) {
    printf("%s threads=%d iterations=%ld seconds=%.3f checksum=%016llx\n", name, a->threads,
           a->iterations, seconds, (unsigned long long)checksum);
}

/* The false-sharing programs' work on one object: allocate `size` bytes, fill them, write
 * each byte `writes` times more, sum them, free the object. */
static inline uint64_t write_object(long i, int size, int writes) {
    volatile char *p = xmalloc(size);
    uint64_t sum = 0;
    for (int b = 0; b < size; b++)
        p[b] = (char)i;
    for (int r = 0; r < writes; r++)
        for (int b = 0; b < size; b++)
            p[b] = (char)(p[b] + r + b);
    for (int b = 0; b < size; b++)
        sum += (unsigned char)p[b];
    free((void *)p);
    return sum;
}

#endif
