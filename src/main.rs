//! The `dr` binary: hands the arguments to `dr::cli`, which parses them, sets up logging and
//! runs the command.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(dr::cli::main_with(std::env::args_os().collect()))
}
