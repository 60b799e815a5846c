//! The `refract` binary: everything lives in the library's [`refract::cli`].

fn main() -> std::process::ExitCode {
    refract::cli::main()
}
