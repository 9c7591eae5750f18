//! The `verdict` binary; everything lives in the library.

/// jemalloc rather than glibc's allocator: a decision allocates and frees many small objects on
/// whichever worker runs it, and under load glibc's allocator cost 10–15 % more server CPU per
/// request, and held more memory with 100,000 cached tokens (BENCHMARKS §4, "The allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    verdict::cli::main()
}
