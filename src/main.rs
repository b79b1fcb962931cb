//! The `kroute` command line. Each subcommand lives in `cli/`; the work is in the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
