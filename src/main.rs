//! The `kroute` command line. Each subcommand lives in `cli/`; the work is in the library.

mod cli;

/// The embedding passes allocate and free tens of MB per layer; glibc's malloc hands such blocks
/// back to the kernel at every free, so each new output is page-faulted in again (7 % of an
/// int8 run). mimalloc keeps them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
