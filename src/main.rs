//! The `pairedit` binary: parse arguments, set up logging, run the command, map errors to exit codes.

use clap::Parser as _;
use pairedit::cli::Command;

fn main() -> std::process::ExitCode {
    let cli = pairedit::cli::Cli::parse();
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("PAIREDIT_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
    };
    // The editor owns the screen: its logs go to a file, never onto the terminal.
    let editor_log = match &cli.command {
        Command::Host(a) => Some(a.editor.log_file.clone()),
        Command::Join(a) => Some(a.editor.log_file.clone()),
        _ => None,
    };
    match editor_log {
        Some(path) => {
            let path = path.unwrap_or_else(|| std::env::temp_dir().join("pairedit.log"));
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
            {
                Ok(file) => tracing_subscriber::fmt()
                    .with_writer(std::sync::Mutex::new(file))
                    .with_ansi(false)
                    .with_env_filter(filter())
                    .init(),
                Err(e) => eprintln!("pairedit: not logging ({}: {e})", path.display()),
            }
        }
        None => tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter())
            .init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pairedit: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(pairedit::commands::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pairedit: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
