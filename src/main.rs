//! The `dr` binary: parses arguments, sets up logging, and hands over to `dr::cli`.

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DR_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    std::process::ExitCode::from(dr::cli::main_with(std::env::args_os().collect()))
}
