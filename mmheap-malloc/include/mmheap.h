/* mmheap: a memory manager whose heap can live in a memory-mapped file.
 *
 * libmmheap_malloc.so exports malloc, free, calloc, realloc, reallocarray, posix_memalign,
 * aligned_alloc, memalign, valloc, pvalloc and malloc_usable_size over mmheap's in-process
 * heap (LD_PRELOAD it, or link it), and the functions below. The heap reserves 64 GiB of
 * address space; beyond it, and for alignments above 4096, glibc's allocator serves.
 *
 * Errors: functions returning pointers return NULL, those returning int return -1; the
 * calling thread's last error message is mmheap_last_error(). Every call that can fail clears
 * it first. A NULL manager or block argument is such an error (block_len returns 0,
 * block_handle a zero handle), never a crash.
 */
#ifndef MMHEAP_H
#define MMHEAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* "Legacy" allocation over the process-wide heap: the same as malloc, realloc, free. */
void *mmheap_alloc(size_t size);
void *mmheap_realloc(void *p, size_t size);
void mmheap_free(void *p);

/* A manager: the process-wide in-process one, or a store file shared by processes. */
typedef struct mmheap_manager mmheap_manager;
mmheap_manager *mmheap_default(void);
mmheap_manager *mmheap_store_create(const char *path, uint64_t max_size /* 0: default */);
mmheap_manager *mmheap_store_open(const char *path);
void mmheap_manager_release(mmheap_manager *m);

/* "Modern" allocation: a counted reference to a block of a chosen manager. The block is
 * freed when the last reference, in any process, is released. Its bytes are writable
 * (mmheap_block_data_mut) only while this is its only reference and it was never shared. */
typedef struct mmheap_block mmheap_block;
mmheap_block *mmheap_alloc_with(const mmheap_manager *m, size_t len);
void mmheap_free_with(mmheap_block *b);
mmheap_block *mmheap_block_clone(const mmheap_block *b);
const void *mmheap_block_data(const mmheap_block *b);
void *mmheap_block_data_mut(mmheap_block *b);
size_t mmheap_block_len(const mmheap_block *b);

/* A plain value naming a block of a store, for another process; taking one publishes the
 * block (read-only from then on). Resolving a stale or forged handle fails. */
typedef struct mmheap_handle {
    uint64_t offset;
    uint64_t generation;
} mmheap_handle;
mmheap_handle mmheap_block_handle(const mmheap_block *b);
mmheap_block *mmheap_resolve(const mmheap_manager *m, mmheap_handle h);

/* Named roots of a store: survive the process. mmheap_root returns NULL with no error set
 * when the name is absent. */
int mmheap_set_root(const mmheap_manager *m, const char *name, const mmheap_block *b);
mmheap_block *mmheap_root(const mmheap_manager *m, const char *name);

const char *mmheap_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
