/* glibc-simple: tight single-threaded malloc/free loops of small sizes (after glibc's
 * benchtests/bench-malloc-simple). Batches of 1, 25, 100 and 400 blocks of random sizes
 * 16..256 bytes are allocated, stamped and freed, in the order of allocation and in reverse
 * by turns. -n is the number of allocations in all. */
#include "stress.h"

static const int batch_sizes[] = {1, 25, 100, 400};

int main(int argc, char **argv) {
    struct args a;
    parse_args(argc, argv, &a, 1, 60000000);
    void *blocks[400];
    uint64_t rng = 11, sum = 0, tag = 0;
    long done = 0;
    double start = now();
    for (int round = 0; done < a.iterations; round++) {
        int n = batch_sizes[round % 4];
        for (int rep = 0; rep < 1000 && done < a.iterations; rep++) {
            int k = n < a.iterations - done ? n : (int)(a.iterations - done);
            for (int i = 0; i < k; i++)
                blocks[i] = stamped(between(&rng, 16, 256), tag++);
            if (rep % 2)
                for (int i = 0; i < k; i++)
                    sum += seal(blocks[i]);
            else
                for (int i = k - 1; i >= 0; i--)
                    sum += seal(blocks[i]);
            done += k;
        }
    }
    report("glibc-simple", &a, now() - start, sum);
    return 0;
}
