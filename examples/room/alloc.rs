//! The room example's memory allocator: jemalloc (`tikv-jemallocator`).
//!
//! glibc's malloc keeps what a burst of large allocations leaves behind: in
//! S14 (`cargo xtask bench`), 50 peers that never read made the server
//! hold their answers (up to the outbound queue limit plus one frame each),
//! and once they were gone the process kept 360 to 760 MiB of the 450 to
//! 800 MiB it had peaked at. With jemalloc the same attack peaks at about
//! 170 MiB and RSS returns to where it was before it, without costing the
//! throughput scenarios (S2, S3, S4; figures in README.md, Limits). glibc
//! comes close with `MALLOC_MMAP_THRESHOLD_=1048576` in the environment,
//! at a cost to S3's broadcast. On MSVC (no jemalloc) the system allocator
//! stays.

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
