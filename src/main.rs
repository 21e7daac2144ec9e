//! The `sidecast` command: run, check, token.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sidecast::config::{default_path, Config};

#[derive(Parser)]
#[command(
    name = "sidecast",
    version,
    about = "A reverse-proxy sidecar that adds Server-Sent Events to existing HTTP APIs",
    after_help = "Without a command, sidecast runs the sidecar: the proxy and the event streams \
                  on the public listener, the publish API and the admin listener, as the \
                  configuration file says."
)]
struct Cli {
    /// Configuration file [default: $SIDECAST_CONFIG when set, else ./sidecar.toml]
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and print the effective settings.
    Check,
    /// Print a development token signed with the configured HS secret.
    Token {
        /// The token's subject (the stream's user).
        #[arg(long)]
        sub: String,
        /// A topic pattern to grant (repeatable).
        #[arg(long = "topic", required = true)]
        topics: Vec<String>,
        /// How long the token is valid, such as 1h or 15m.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        for line in &e.lines {
            eprintln!("{line}");
        }
        eprintln!(
            "{}: {} problem(s); nothing was started",
            path.display(),
            e.lines.len()
        );
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = cli.config.clone().unwrap_or_else(default_path);
    let config = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cli.command {
        Some(Command::Check) => {
            let mut report = config.effective();
            if config.events.max_streams == sidecast::config::MaxStreams::Auto {
                let files = sidecast::limits::raise_nofile();
                let memory = sidecast::limits::memory_limit();
                report.push_str(&format!(
                    "# max_streams = \"auto\" is {} here (open files {files}, memory {memory} bytes)\n",
                    sidecast::limits::auto_max_streams(files, memory)
                ));
            }
            let table = sidecast::routes::RouteTable::new(&config);
            report.push_str(&format!(
                "\n{}",
                table.describe(&config.upstream.target.url)
            ));
            for w in &config.warnings {
                eprintln!("warning: {w}");
            }
            report.push_str(&format!("\n{}: valid\n", path.display()));
            // A reader that stops early (`sidecast check | head`) is not an
            // error of the configuration: the exit status stays the verdict.
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), report.as_bytes());
            ExitCode::SUCCESS
        }
        Some(Command::Token { sub, topics, ttl }) => {
            match sidecast::token::mint(&config, &sub, &topics, ttl) {
                Ok(t) => {
                    println!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sidecast token: {e}");
                    ExitCode::from(2)
                }
            }
        }
        None => {
            let levels = sidecast::logging::init(&config.log);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("sidecast: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = rt.block_on(sidecast::app::run(config, levels));
            // Tasks still running (streams to clients that do not read,
            // upgraded connections) end with the process: the drain has
            // already given them their grace.
            rt.shutdown_timeout(std::time::Duration::from_millis(100));
            let code = match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    sidecast::logging::flush();
                    eprintln!("sidecast: {e:#}");
                    ExitCode::FAILURE
                }
            };
            sidecast::logging::flush();
            code
        }
    }
}
