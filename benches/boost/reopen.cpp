// Boost.Interprocess's figure for benches/alloc.rs's "reopen": a managed_mapped_file holding
// 1,000,000 live blocks of 64 bytes and a named object, opened again and the object found.
// benches/alloc.rs builds and runs this (when Boost's headers are installed: libboost-dev),
// alternating with its own reopen of an mmheap store holding as many blocks.
//
//   reopen create PATH N    makes the file: N blocks of 64 B kept allocated, a named u64
//   reopen open PATH [N]    prints the nanoseconds to open it and find the named object (with
//                           N, opens it N times in this process and prints each)
#include <boost/interprocess/managed_mapped_file.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace bip = boost::interprocess;

static int create(const char *path, long n) {
    bip::file_mapping::remove(path);
    bip::managed_mapped_file seg(bip::create_only, path, static_cast<std::size_t>(n) * 96 + (64u << 20));
    for (long i = 0; i < n; i++) {
        void *p = seg.allocate(64); // kept: the blocks stay live in the file
        std::memset(p, static_cast<int>(i), 8);
    }
    seg.construct<std::uint64_t>("index")(42);
    return 0;
}

static int open_once(const char *path) {
    auto start = std::chrono::steady_clock::now();
    auto seg = std::make_unique<bip::managed_mapped_file>(bip::open_only, path);
    std::uint64_t *index = seg->find<std::uint64_t>("index").first;
    if (index == nullptr || *index != 42) {
        std::fprintf(stderr, "reopen: the named object is missing\n");
        return 1;
    }
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start);
    seg.reset(); // closed outside the timed part, as the Rust side drops its manager
    std::printf("%lld\n", static_cast<long long>(ns.count()));
    return 0;
}

static int open(const char *path, long times) {
    for (long i = 0; i < times; i++) {
        if (open_once(path) != 0)
            return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && std::strcmp(argv[1], "create") == 0)
        return create(argv[2], std::atol(argv[3]));
    if ((argc == 3 || argc == 4) && std::strcmp(argv[1], "open") == 0)
        return open(argv[2], argc == 4 ? std::atol(argv[3]) : 1);
    std::fprintf(stderr, "usage: reopen create PATH N | reopen open PATH [N]\n");
    return 2;
}
