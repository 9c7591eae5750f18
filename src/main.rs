//! The `verdict` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    verdict::cli::main()
}
