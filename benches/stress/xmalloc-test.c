/* xmalloc-test: producer threads allocate blocks in batches and hand the batches to consumer
 * threads, which free them, so every block is freed by another thread than the one that
 * allocated it (after the producer/consumer test of Lever and Boreham, "malloc() Performance
 * in a Multithreaded Linux Environment").
 *
 * The threads pair up, a producer and a consumer per pair (at least one pair), joined by a
 * lock-free ring of 1,024 batches; a side that finds the ring full or empty yields its core.
 * -n is the number of batches in all; a batch holds 64 blocks of 16..512 bytes and is itself
 * a heap block. */
#include <sched.h>
#include <stdatomic.h>

#include "stress.h"

#define BATCH 64
#define RING 1024

struct batch {
    void *blocks[BATCH];
};

struct pair {
    _Atomic unsigned long head, tail; /* consumer takes at head, producer puts at tail */
    atomic_int done;
    struct batch *ring[RING];
    int id;
    long batches;
    uint64_t sum;
};

static void *produce(void *arg) {
    struct pair *p = arg;
    uint64_t rng = p->id + 1;
    for (long i = 0; i < p->batches; i++) {
        struct batch *b = xmalloc(sizeof *b);
        for (int j = 0; j < BATCH; j++)
            b->blocks[j] = stamped(between(&rng, 16, 512), (uint64_t)p->id << 48 | (uint64_t)(i * BATCH + j));
        unsigned long tail = atomic_load_explicit(&p->tail, memory_order_relaxed);
        while (tail - atomic_load_explicit(&p->head, memory_order_acquire) == RING)
            sched_yield();
        p->ring[tail % RING] = b;
        atomic_store_explicit(&p->tail, tail + 1, memory_order_release);
    }
    atomic_store_explicit(&p->done, 1, memory_order_release);
    return NULL;
}

static void *consume(void *arg) {
    struct pair *p = arg;
    unsigned long head = 0;
    for (;;) {
        if (head == atomic_load_explicit(&p->tail, memory_order_acquire)) {
            if (atomic_load_explicit(&p->done, memory_order_acquire) &&
                head == atomic_load_explicit(&p->tail, memory_order_acquire))
                return NULL;
            sched_yield();
            continue;
        }
        struct batch *b = p->ring[head % RING];
        atomic_store_explicit(&p->head, ++head, memory_order_release);
        for (int j = 0; j < BATCH; j++)
            p->sum += seal(b->blocks[j]);
        free(b);
    }
}

struct role {
    struct pair *pair;
    int producer;
};

static void *work(void *arg) {
    struct role *r = arg;
    return r->producer ? produce(r->pair) : consume(r->pair);
}

int main(int argc, char **argv) {
    struct args a;
    parse_args(argc, argv, &a, cores() < 2 ? 2 : cores(), 200000);
    int pairs = a.threads < 2 ? 1 : a.threads / 2;
    a.threads = 2 * pairs;
    struct pair *p = calloc(pairs, sizeof *p);
    struct role *roles = calloc(a.threads, sizeof *roles);
    for (int i = 0; i < pairs; i++) {
        p[i].id = i;
        p[i].batches = a.iterations / pairs + (i < a.iterations % pairs);
        roles[2 * i] = (struct role){&p[i], 1};
        roles[2 * i + 1] = (struct role){&p[i], 0};
    }
    double start = now();
    run_threads(a.threads, work, roles, sizeof *roles);
    double seconds = now() - start;
    uint64_t sum = 0;
    for (int i = 0; i < pairs; i++)
        sum += p[i].sum;
    report("xmalloc-test", &a, seconds, sum);
    free(p);
    free(roles);
    return 0;
}
