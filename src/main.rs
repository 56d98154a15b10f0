//! The `crossline` command: parse arguments, then hand over to the library.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crossline::config::{Config, LogFormat};
use crossline::telemetry::otlp::Exporter;

/// jemalloc with background purging gives memory back after a burst of
/// calls; glibc's malloc keeps most of it (benches/README.md, section 11).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "crossline",
    version,
    about = "SIP/RTP media gateway with call and chat flows built in",
    long_about = "crossline terminates SIP calls itself (SIP + RTP, no PBX behind it), runs call flows inline \
                  and moves callers between voice and chat.\n\nWith no config file, `crossline run` uses embedded \
                  defaults: SIP on 127.0.0.1:5060 (UDP and TCP), HTTP on 127.0.0.1:8080, SQLite at ./crossline.db, \
                  and a demo flow that answers every call, plays audio/welcome-en.wav, then wait \
                  music with a hold message until the caller hangs up."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. SIGTERM/SIGINT drain: new calls get 503, calls in
    /// progress get BYE after `sip.shutdown_grace_secs`. SIGHUP re-reads the
    /// config file: routes, flows, TTS prompts and the hold program change for
    /// new calls; calls in progress keep theirs.
    Run {
        /// TOML config file; every key is documented in deploy/crossline.example.toml.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate a config file, and the flow files it names, without starting.
    /// Prints every error as file:line:column: key: message and exits non-zero.
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    // reqwest is built without a TLS provider (no aws-lc); pick ring once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { file } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: OK", file.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{}: {} error(s)", file.display(), errors.0.len());
                ExitCode::from(1)
            }
        },
        Command::Run { config } => {
            let config_path = config.clone();
            let config = match config {
                Some(path) => match Config::load(&path) {
                    Ok(c) => c,
                    Err(errors) => {
                        // A bad config never half-starts.
                        eprintln!("{errors}");
                        return ExitCode::from(1);
                    }
                },
                None => Config::embedded(),
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            let otlp = match config.telemetry.otlp_traces_url() {
                Some(url) => {
                    let node = config.store.node_id(config.http.listen);
                    match Exporter::start(&url, &node, runtime.handle().clone()) {
                        Ok(e) => Some(e),
                        Err(e) => {
                            eprintln!("[telemetry] otlp_endpoint: {e}");
                            return ExitCode::from(1);
                        }
                    }
                }
                None => None,
            };
            init_logging(&config, otlp.as_ref());
            if otlp.is_some() {
                tracing::info!("exporting call and chat traces over OTLP/HTTP");
            }
            let result = runtime.block_on(crossline::runtime::run(config, config_path));
            if let Err(e) = &result {
                tracing::error!("{e:#}");
                eprintln!("crossline: {e:#}");
            }
            // Calls are drained: their spans are closed, send them out.
            if let Some(otlp) = otlp {
                otlp.shutdown();
            }
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(1),
            }
        }
    }
}

fn init_logging(config: &Config, otlp: Option<&Exporter>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.logging.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colours only for a terminal: log files and journald get plain text.
    let ansi = std::io::stderr().is_terminal();
    let Some(otlp) = otlp else {
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr);
        match config.logging.format {
            LogFormat::Json => builder.json().init(),
            LogFormat::Text => builder.init(),
        }
        return;
    };
    // Each layer filters for itself: `[logging] level` decides what is
    // logged, not what is exported.
    use tracing_subscriber::prelude::*;
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let fmt = match config.logging.format {
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
        LogFormat::Text => fmt.with_filter(filter).boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(otlp.layer())
        .init();
}
