//! The `chatd` command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use chatd::config::Config;
use chatd::gateway::{Gateway, Snapshot};
use chatd::inspect;

#[derive(Parser)]
#[command(
    name = "chatd",
    version,
    about = "LLM gateway with sandboxed WebAssembly provider adapters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve {
        /// Config file.
        #[arg(long, short, default_value = "lakehouse.toml", env = "CHATD_CONFIG")]
        config: PathBuf,
        /// Listen address (overrides chatd.bind).
        #[arg(long)]
        bind: Option<SocketAddr>,
    },
    /// Print the provider and upstream model a model name resolves to, and why.
    Route {
        /// The model name as a client would send it.
        model: String,
        #[arg(long, short, default_value = "lakehouse.toml", env = "CHATD_CONFIG")]
        config: PathBuf,
    },
    /// Validate the config, load every adapter and report key status (never keys).
    Check {
        #[arg(long, short, default_value = "lakehouse.toml", env = "CHATD_CONFIG")]
        config: PathBuf,
    },
    /// Inspect adapter components.
    Adapters {
        #[command(subcommand)]
        command: AdaptersCommand,
    },
    /// Client keys (`[chatd.clients]`).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a new key for a client: prints the key once, and the config lines to add (only
    /// its SHA-256 digest is stored). For an existing client, the lines add a second key.
    Add {
        /// The client's name (letters, digits, '_', '-', '.'): in log lines, metrics, limits.
        name: String,
        /// Models the key may use, comma-separated patterns (`*` matches any run of
        /// characters): tiers, `provider/*`, model names.
        #[arg(long, value_delimiter = ',', default_value = "*")]
        models: Vec<String>,
        #[arg(long)]
        requests_per_minute: Option<u64>,
        #[arg(long)]
        tokens_per_minute: Option<u64>,
        #[arg(long)]
        tokens_per_day: Option<u64>,
        #[arg(long)]
        tokens_per_month: Option<u64>,
        /// The config the key is for (to find its keys file and existing clients).
        #[arg(long, short, default_value = "lakehouse.toml", env = "CHATD_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum AdaptersCommand {
    /// Validate a component file and print its self-description.
    Check {
        /// The `.wasm` component.
        file: PathBuf,
    },
    /// Show the adapters a config would load and where each comes from.
    List {
        #[arg(long, short, default_value = "lakehouse.toml", env = "CHATD_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    bound_malloc_arenas();
    fix_mmap_threshold();
    let cli = Cli::parse();
    // The server's config is read before logging starts: it says whether traces are exported.
    let served = match &cli.command {
        Command::Serve { config, .. } => match Config::load(config) {
            Ok(loaded) => Some(loaded),
            Err(e) => {
                eprintln!("chatd: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    // Only the server logs enough for batching to matter; one-shot commands print to stdout
    // and their log lines should interleave with it as they happen.
    let (log_guard, otel_guard) = match init_logging(served.as_ref().map(|c| &c.chatd.otel)) {
        Ok(guards) => guards,
        Err(e) => {
            eprintln!("chatd: {e}");
            return ExitCode::FAILURE;
        }
    };
    // This runtime accepts connections, watches files and signals, and runs the one-shot
    // commands; clients are served by `chatd.threads` threads of their own (api::server),
    // and adapters compile on blocking threads. One worker is plenty.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    let runtime = match chatd::runtime::drop_on_park(&mut builder)
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chatd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { bind, .. } => match served {
                Some(loaded) => serve(loaded, bind).await,
                None => Err("no config".to_owned()),
            },
            Command::Route { model, config } => route(&config, &model).await,
            Command::Check { config } => check(&config).await,
            Command::Adapters {
                command: AdaptersCommand::Check { file },
            } => adapters_check(&file).await,
            Command::Adapters {
                command: AdaptersCommand::List { config },
            } => adapters_list(&config).await,
            Command::Keys {
                command:
                    KeysCommand::Add {
                        name,
                        models,
                        requests_per_minute,
                        tokens_per_minute,
                        tokens_per_day,
                        tokens_per_month,
                        config,
                    },
            } => keys_add(
                &name,
                &models,
                chatd::config::Limits {
                    requests_per_minute,
                    tokens_per_minute,
                    tokens_per_day,
                    tokens_per_month,
                },
                &config,
            ),
        }
    });
    // Spans not yet exported go out first (their failure is logged), then buffered log
    // lines, before the final error, in order.
    drop(otel_guard);
    drop(log_guard);
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("chatd: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Caps glibc's malloc arenas at four per CPU (glibc's default is eight per CPU).
///
/// Enough for each long-lived thread (server threads, the acceptor's runtime, the log
/// writer, the epoch ticker, the file watcher, adapter compiles) to get an arena of its own.
/// With fewer arenas than threads glibc hands later threads a shared one, and two server
/// threads on one arena take turns on its lock for every allocation: a process started that
/// way served half the requests per second at twice the CPU per request, for its whole life
/// (about one start in five with one arena per CPU; bench/README.md). The cap still keeps a
/// burst of short-lived blocking threads from each leaving an arena behind. An operator's
/// own `MALLOC_ARENA_MAX` wins. Must run before any thread is spawned.
fn bound_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cpus.saturating_mul(4)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only adjusts allocator parameters; called before other threads exist.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// Logs to stderr: for the server (`otel` given) at `info`, in batches (see
/// [`chatd::logging`]; the guard writes out the rest when dropped), with traces exported
/// when `[chatd.otel]` enables them; for one-shot commands only errors, since what they
/// report (unregistered providers, rejected adapters) they print themselves. `RUST_LOG` wins.
fn init_logging(
    otel: Option<&chatd::config::OtelConfig>,
) -> Result<
    (
        Option<chatd::logging::LogGuard>,
        Option<chatd::otel::OtelGuard>,
    ),
    String,
> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let server = otel.is_some();
    let default = if server { "info" } else { "error" };
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let batched = server
        .then(|| chatd::logging::BufferedOutput::new(std::io::stderr()))
        .and_then(|made| {
            made.inspect_err(|e| {
                eprintln!("chatd: cannot start the log writer thread ({e}); logging unbuffered")
            })
            .ok()
        });
    let (writer, guard) = match batched {
        Some((output, guard)) => {
            output.flush_on_panic();
            (
                tracing_subscriber::fmt::writer::BoxMakeWriter::new(output),
                Some(guard),
            )
        }
        None => (
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
            None,
        ),
    };
    match otel.filter(|o| o.enabled) {
        // Without traces, one global filter: what is off costs one check at its call site.
        None => {
            let log = tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .event_format(chatd::log_format::LineFormat)
                .with_writer(writer);
            let targets = static_filter(std::env::var("RUST_LOG").ok().as_deref(), default);
            let env_filter = targets.is_none().then(filter);
            if env_filter.is_some() {
                // A filter by span may name the request's.
                chatd::request_id::open_spans();
            }
            tracing_subscriber::registry()
                .with(targets)
                .with(env_filter)
                .with(log)
                .init();
            Ok((guard, None))
        }
        // With traces, each output filters for itself: the log keeps its level, and the
        // exporter takes chatd's spans (the request's children are at debug) and warnings.
        Some(config) => {
            let (traces, otel_guard) = chatd::otel::layer(config)?;
            let spans = tracing_subscriber::filter::filter_fn(|meta| {
                if meta.is_span() {
                    meta.target().starts_with("chatd")
                } else {
                    *meta.level() <= tracing::Level::WARN
                }
            });
            let log = tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .event_format(chatd::log_format::LineFormat)
                .with_writer(writer)
                .with_filter(filter());
            tracing_subscriber::registry()
                .with(log)
                .with(traces.with_filter(spans))
                .init();
            Ok((guard, Some(otel_guard)))
        }
    }
}

/// `directives` (`RUST_LOG`; `default` when unset or blank) as a filter by target and level,
/// unless they filter by span or field, which only `EnvFilter` can. `EnvFilter` checks, on
/// every entry into and exit from any span, whether a span-scoped directive applies, behind a
/// lock all threads share: a request's span, when it has one, is entered on every poll of the
/// request, and that cost ~10 µs CPU per request at c=1 (bench/README.md).
fn static_filter(
    directives: Option<&str>,
    default: &str,
) -> Option<tracing_subscriber::filter::Targets> {
    let directives = directives
        .filter(|d| !d.trim().is_empty())
        .unwrap_or(default);
    // `Targets` would read `chatd[request]=debug` as a target named `chatd[request]`, not
    // refuse it: span and field filters are recognised by their brackets.
    if directives.contains(['[', '{']) {
        return None;
    }
    directives.parse().ok()
}

async fn serve(config: Config, bind: Option<SocketAddr>) -> Result<ExitCode, String> {
    let hup = chatd::reload::catch_sighup();
    if config.chatd.otel.enabled {
        tracing::info!(endpoint = %config.chatd.otel.endpoint, "exporting traces over OTLP/HTTP");
    }
    // The flag wins over the file without changing the config: a reload compares the file
    // with the file, and would otherwise warn that `bind` changed on every reload.
    let addr = bind.unwrap_or(config.chatd.bind);
    let gateway = Gateway::start(config).await.map_err(|e| e.to_string())?;
    log_registry(&gateway.snapshot());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        addr = %local,
        threads = gateway.snapshot().config.server_threads(),
        "chatd listening"
    );
    if let Some(warning) = chatd::clients::exposure_warning(local, &gateway.snapshot().config) {
        tracing::warn!("{warning}");
    }
    chatd::reload::spawn(gateway.clone(), hup);
    chatd::api::serve(listener, gateway.clone(), shutdown_signal(gateway.clone()))
        .await
        .map_err(|e| format!("server failed: {e}"))?;
    tracing::info!("chatd stopped");
    Ok(ExitCode::SUCCESS)
}

fn log_registry(snap: &Snapshot) {
    for p in snap.providers.values() {
        tracing::info!(
            provider = %p.name,
            adapter = %p.adapter.name,
            version = %p.adapter.info.version,
            base_url = %p.target.base_url(),
            key = %p.key_source.as_ref().map_or("none needed".to_owned(), |s| s.to_string()),
            "provider registered"
        );
    }
}

/// Resolves at the first SIGINT or SIGTERM. A second one ends the requests still in flight
/// at once (they answer 503 `shutting_down`) instead of waiting out the grace period: what
/// an operator pressing Ctrl-C twice means.
async fn shutdown_signal(gateway: Arc<Gateway>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(int), Ok(term)) => (int, term),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot listen for SIGINT/SIGTERM; stop chatd with SIGKILL");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = int.recv() => {},
        _ = term.recv() => {},
    }
    tracing::info!(
        "shutdown requested; finishing in-flight requests (a second signal ends them now)"
    );
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        tracing::warn!("second shutdown signal: ending the requests still in flight now");
        gateway.cut_in_flight();
    });
}

async fn route(config_path: &Path, model: &str) -> Result<ExitCode, String> {
    let loaded = inspect::load(config_path).await?;
    match inspect::route(&loaded.snapshot, model) {
        Ok(line) => {
            println!("{line}");
            Ok(ExitCode::SUCCESS)
        }
        Err(line) => {
            println!("{line}");
            Ok(ExitCode::from(2))
        }
    }
}

async fn check(config_path: &Path) -> Result<ExitCode, String> {
    let loaded = inspect::load(config_path).await?;
    Ok(print(inspect::check(&loaded)))
}

async fn adapters_check(file: &Path) -> Result<ExitCode, String> {
    Ok(print(inspect::check_component(file).await))
}

async fn adapters_list(config_path: &Path) -> Result<ExitCode, String> {
    let loaded = inspect::load(config_path).await?;
    for line in inspect::adapters_table(&loaded.snapshot) {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `chatd keys add`: a new key, printed once, and the lines that configure it.
fn keys_add(
    name: &str,
    models: &[String],
    limits: chatd::config::Limits,
    config_path: &Path,
) -> Result<ExitCode, String> {
    chatd::config::clients::check_client_name(name)?;
    let models: Vec<String> = models
        .iter()
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .collect();
    if models.is_empty() {
        return Err("--models names no model pattern".into());
    }
    let fields = [
        ("--requests-per-minute", limits.requests_per_minute),
        ("--tokens-per-minute", limits.tokens_per_minute),
        ("--tokens-per-day", limits.tokens_per_day),
        ("--tokens-per-month", limits.tokens_per_month),
    ];
    if let Some((flag, _)) = fields.iter().find(|(_, v)| *v == Some(0)) {
        return Err(format!(
            "{flag} must be at least 1 (leave it out for no limit)"
        ));
    }
    // The config, when it loads, says where keys live and whether the client exists.
    let config = match Config::load(config_path) {
        Ok(config) => Some(config),
        Err(chatd::config::ConfigError::Read { .. }) => None,
        Err(e) => {
            eprintln!("chatd: note: {e}; printing lines for lakehouse.toml");
            None
        }
    };
    let clients = config.as_ref().map(|c| &c.chatd.clients);
    let existing = clients.and_then(|c| c.keys.get(name));
    let keys_file = clients.and_then(|c| c.keys_file.as_deref());
    let key = chatd::clients::keys::generate()?;
    println!(
        "New key for client {name:?}. It is shown only now: chatd keeps only its SHA-256 digest.\n"
    );
    println!("    {key}\n");
    print!(
        "{}",
        chatd::clients::keys::entry_lines(name, &key, &models, &limits, existing, keys_file)
    );
    if clients.is_some_and(|c| !c.enabled) {
        println!(
            "\nClient keys are off in {}: set [chatd.clients] enabled = true.",
            config_path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a report; exits 1 when it found what should fail a deploy.
fn print(report: inspect::Report) -> ExitCode {
    for line in &report.lines {
        println!("{line}");
    }
    if report.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Allocations from this size on get mappings of their own, unmapped when freed.
const MMAP_THRESHOLD: usize = 256 << 10;

/// Free memory at the top of an arena's heap beyond which glibc gives it back.
const TRIM_THRESHOLD: usize = 1 << 20;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD`] (glibc's starts at 128 KiB), and its
/// trim threshold at [`TRIM_THRESHOLD`].
///
/// glibc raises its mmap threshold to the size of every mapped block that is freed, up to
/// 32 MiB: after the first burst of big request bodies, every later body (and its parsed
/// copy) came from the heap, whose freed space glibc keeps, so RSS grew from burst to burst
/// and stayed there (bench/README.md). A fixed threshold keeps big buffers in mappings that
/// are given back when freed; requests of ordinary size allocate nothing that large.
///
/// Fixing it also stops glibc from raising its trim threshold with it, which then stays at
/// 128 KiB: the arenas' heaps were shrunk and grown again all the time under load (page
/// faults, and TLB shootdowns across the server threads), 2-4% of the CPU per request at
/// c=64. 1 MiB is enough; memory after bursts of big bodies is given back by
/// `memory.rs` anyway. An operator's own `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`
/// (or `GLIBC_TUNABLES`) wins.
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (name, tunable, param, value) in [
        (
            "MALLOC_MMAP_THRESHOLD_",
            "mmap_threshold",
            libc::M_MMAP_THRESHOLD,
            MMAP_THRESHOLD,
        ),
        (
            "MALLOC_TRIM_THRESHOLD_",
            "trim_threshold",
            libc::M_TRIM_THRESHOLD,
            TRIM_THRESHOLD,
        ),
    ] {
        if std::env::var_os(name).is_some()
            || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains(tunable))
        {
            continue;
        }
        let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only adjusts allocator parameters; called before other threads exist.
        unsafe {
            libc::mallopt(param, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::static_filter;

    #[test]
    fn rust_log_of_targets_and_levels_gets_the_target_filter_and_span_directives_do_not() {
        use tracing_subscriber::filter::LevelFilter;
        // Unset or blank: the default.
        for unset in [None, Some(""), Some("  ")] {
            let targets = static_filter(unset, "info").unwrap();
            assert_eq!(targets.default_level(), Some(LevelFilter::INFO));
        }
        let targets = static_filter(Some("warn,chatd::runtime=debug"), "info").unwrap();
        assert_eq!(targets.default_level(), Some(LevelFilter::WARN));
        assert!(targets.would_enable("chatd::runtime::adapter", &tracing::Level::DEBUG));
        assert!(!targets.would_enable("chatd::api", &tracing::Level::INFO));
        // Span-scoped and field directives are left to EnvFilter.
        assert!(static_filter(Some("chatd[request]=debug"), "info").is_none());
        assert!(static_filter(Some("info,chatd[{request_id=x}]=trace"), "info").is_none());
    }
}
