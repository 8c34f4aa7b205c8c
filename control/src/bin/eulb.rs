//! `eulb`: the euca2ools-compatible command-line client (see `control::cli`).

fn main() -> std::process::ExitCode {
    control::cli::main()
}
