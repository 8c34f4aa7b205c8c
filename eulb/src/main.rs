//! `eulb`: the euca2ools-compatible command-line client (see the `eulb` library).

fn main() -> std::process::ExitCode {
    eulb::main()
}
