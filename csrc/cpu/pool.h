// A tiny persistent worker pool for the CPU kernels (std::thread + condition variables; no OpenMP,
// whose runtime could clash with the one torch bundles).
#pragma once

namespace tnattn {
namespace cpu {
namespace detail {

// Runs task(ctx, t) for t in [0, n): t = 0 on the calling thread, t >= 1 on pool workers (created
// on first use, kept for later calls). Returns false without running anything when the pool is
// busy with another caller (e.g. a second Python thread; the caller then uses its own threads).
// Tasks must not throw. After fork() the child starts a fresh pool (workers do not survive fork).
bool pool_run(int n, void (*task)(void*, int), void* ctx);

}  // namespace detail
}  // namespace cpu
}  // namespace tnattn
