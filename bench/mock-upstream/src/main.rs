//! `mock-upstream`: a fast fake Ollama / OpenAI-compatible upstream for gateway benchmarks.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use chatd_bench_mock_upstream::{Config, serve};
use clap::Parser;

/// Fake LLM upstream answering Ollama (/api/chat, /api/generate, /api/tags) and
/// OpenAI-compatible (/v1/chat/completions, /chat/completions, /models, /v1/models) requests.
///
/// Prints "mock-upstream listening on ADDR" once the socket is bound.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:11434")]
    bind: SocketAddr,
    /// Fixed delay in milliseconds before answering each request.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Number of content chunks in a streamed answer.
    #[arg(long, default_value_t = 8)]
    chunks: usize,
    /// Delay in milliseconds between successive frames of a streamed answer.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Tokio worker threads (the default of 1 leaves the other core to the gateway under test).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.workers))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mock-upstream: cannot start runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let config = Config {
        delay: Duration::from_millis(args.delay_ms),
        chunks: args.chunks,
        chunk_delay: Duration::from_millis(args.chunk_delay_ms),
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(args.bind).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("mock-upstream: cannot bind {}: {error}", args.bind);
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().unwrap_or(args.bind);
        // Scripts block on this exact line; stdout is line-buffered so it is flushed here.
        println!("mock-upstream listening on {addr}");
        serve(listener, config).await;
        ExitCode::SUCCESS
    })
}
