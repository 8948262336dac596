//! The `warren` command line: a clap tree, one file per command group.

use clap::{Parser, Subcommand};

/// `println!` that returns an error instead of panicking when stdout is closed (`| head`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

pub mod admit;
pub mod admit_admin;
pub mod admit_join;
pub mod admit_loop;
pub mod admit_node;
pub mod bench;
pub mod bench_admit;
pub mod bench_config;
pub mod bench_ctl;
pub mod bench_election;
pub mod bench_plugins;
pub mod bench_ring;
pub mod bench_svc;
pub mod boxcmd;
pub mod clisetup;
pub mod credential;
pub mod ctl;
pub mod groups;
pub mod join_source;
pub mod keys;
pub mod keyserver;
pub mod origin;
pub mod pkg;
pub mod plugin;
pub mod remote;
pub mod ring;
pub mod serf;
pub mod status;
pub mod sup;
pub mod svc;
pub mod user;

/// warren: a supervisor for fleets of services, extensible with WebAssembly plugins.
#[derive(Parser, Debug)]
#[command(name = "warren", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Origin signing keys (they sign packages and plugins).
    #[command(subcommand)]
    Origin(origin::OriginCommand),
    /// The gossip ring: ring keys, in the cache and on running supervisors.
    #[command(subcommand)]
    Ring(ring::RingCommand),
    /// User encryption keys (senders of encrypted configuration).
    #[command(subcommand)]
    User(user::UserCommand),
    /// Service groups (their encryption keys).
    #[command(subcommand)]
    Svc(svc::SvcCommand),
    /// A service group's configuration, applied to every member (config apply).
    #[command(subcommand)]
    Config(groups::ConfigCommand),
    /// Files for every member of a service group (file upload).
    #[command(subcommand)]
    File(groups::FileCommand),
    /// Run and manage supervisors (run, status, depart, restart, ctl secret).
    #[command(subcommand)]
    Sup(sup::SupCommand),
    /// The client's own settings (cli.toml): default supervisor and ctl secrets.
    #[command(subcommand)]
    Cli(clisetup::CliCommand),
    /// The supervisor's control gateway (--remote-sup).
    #[command(subcommand)]
    Ctl(ctl::CtlCommand),
    /// HART-1 packages: build, install, sign, verify, header, extract.
    #[command(subcommand)]
    Pkg(pkg::PkgCommand),
    /// Encrypt or decrypt BOX-1 / ANONYMOUS-BOX-1 messages with keys from the cache.
    #[command(subcommand, name = "box")]
    Box(boxcmd::BoxCommand),
    /// Benchmarks, printed as ratios against a baseline run in the same process.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
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
    /// The admission keyserver: one-time join tokens for new nodes.
    #[command(subcommand)]
    Keyserver(keyserver::KeyserverCommand),
    /// Admit nodes through a keyserver: create, list and revoke join tokens.
    #[command(subcommand)]
    Admit(admit::AdmitCommand),
}

/// Runs the CLI and returns the process exit code. Errors are printed with their causes.
pub fn main() -> i32 {
    let cli = Cli::parse();
    // The vendor's inner loop (`plugin new|build|test`) prints its own results: the registry's
    // load lines (about a scratch folder the user never sees) would only be noise there.
    init_tracing(if matches!(cli.command, Command::Plugin(_)) { "warn" } else { "info" });
    match run(cli) {
        Ok(()) => 0,
        // The reader went away (`warren ... | head`): stop quietly, as if killed by SIGPIPE.
        Err(e) if is_broken_pipe(&e) => 141,
        Err(e) => {
            eprintln!("error: {}", render_error(&e));
            1
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Origin(cmd) => cmd.run(),
        Command::Ring(cmd) => cmd.run(),
        Command::User(cmd) => cmd.run(),
        Command::Svc(cmd) => cmd.run(),
        Command::Config(cmd) => groups::run_config(cmd),
        Command::File(cmd) => groups::run_file(cmd),
        Command::Sup(cmd) => sup::run(cmd),
        Command::Ctl(cmd) => ctl::run(cmd),
        Command::Cli(cmd) => clisetup::run(cmd),
        Command::Pkg(cmd) => cmd.run(),
        Command::Box(cmd) => cmd.run(),
        Command::Bench(cmd) => cmd.run(),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Into a buffer first: clap_complete panics on a failed write.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "warren", &mut script);
            use std::io::Write as _;
            std::io::stdout().lock().write_all(&script)?;
            Ok(())
        }
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Credential(cmd) => credential::run(cmd),
        Command::Keyserver(cmd) => keyserver::run(cmd),
        Command::Admit(cmd) => admit::run(cmd),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Logs go to stderr; `RUST_LOG` (or `WARREN_LOG`) sets the filter, `default` otherwise.
/// Colours only on a terminal (and never with `NO_COLOR`): a journal or a log file gets
/// plain text.
fn init_tracing(default: &str) {
    use std::io::IsTerminal as _;
    let filter = std::env::var("WARREN_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.to_string());
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .try_init();
}

/// An error and its causes, joined with ": ", skipping a cause whose text the message before it
/// already ends with (many errors here print their source themselves, for the log).
fn render_error(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let cause = cause.to_string();
        if text == cause || text.ends_with(&format!(": {cause}")) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::render_error;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on 127.0.0.1:1: {source}")]
    struct Listen {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let e = anyhow::Error::new(Listen { source: io }).context("supervisor failed");
        assert_eq!(render_error(&e), "supervisor failed: cannot listen on 127.0.0.1:1: address in use");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(render_error(&plain), "outer: inner");
        // A cause that merely ends the same way is still printed.
        let near = anyhow::anyhow!("in use").context("address in use");
        assert_eq!(render_error(&near), "address in use: in use");
    }
}
