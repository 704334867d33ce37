//! The `strata` binary: everything lives in the `strata_cli` library.

fn main() -> std::process::ExitCode {
    strata_cli::main()
}
