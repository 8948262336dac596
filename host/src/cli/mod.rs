//! The `warren` command line: a clap tree, one file per command group.

use clap::{Parser, Subcommand};

pub mod bench;
pub mod credential;
pub mod plugin;

/// warren: a supervisor for fleets of services, extensible with WebAssembly plugins.
#[derive(Parser, Debug)]
#[command(name = "warren", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print shell completions for bash, zsh, fish, elvish or powershell.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Inspect, sign and list WebAssembly plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Resolve credential references through plugins.
    #[command(subcommand)]
    Credential(credential::CredentialCommand),
    /// Benchmarks, printed as ratios against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Runs the CLI and returns the process exit code. Errors are printed with their causes.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "warren", &mut std::io::stdout());
            Ok(())
        }
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Credential(cmd) => credential::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
    }
}

/// Logs go to stderr; `RUST_LOG` (or `WARREN_LOG`) sets the filter, `info` by default.
fn init_tracing() {
    let filter = std::env::var("WARREN_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}
