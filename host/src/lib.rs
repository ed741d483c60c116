//! chatd: an LLM gateway whose provider adapters are sandboxed WebAssembly components.
//!
//! The host owns all I/O; adapters only translate requests and responses. Module map:
//! - [`config`]: `lakehouse.toml`, parsed once into typed, validated structs.
//! - [`contract`]: the adapter contract's types (generated from `wit/`) and its versions.
//! - [`keys`]: API keys from the environment or a `.env` file; never logged.
//! - [`routing`]: model name → provider, as one pure function.
//! - [`runtime`]: the wasmtime engine, adapter loading, sandboxing and calls.
//! - [`gateway`]: the registered providers and one chat call end to end.
//! - [`scrub`]: the one path upstream text takes to clients and logs: every key scrubbed.
//! - [`inspect`]: what the one-shot commands (`check`, `route`, `adapters ...`) report.
//! - [`upstream`]: the shared HTTP client and stream framing.
//! - [`reload`]: what triggers a reload (file watcher, SIGHUP).
//! - [`clients`]: client keys, the models each may use, limits and usage.
//! - [`api`]: the HTTP API (axum).
//! - [`logging`]: log lines to stderr, batched.
//! - [`log_format`]: how a log line looks (the request it belongs to named in it).
//! - [`memory`]: the bound on request body bytes in flight, and giving memory back after a burst.
//! - [`request_id`]: `X-Request-Id` on every response, in every log line and error body.
//! - [`otel`]: OpenTelemetry traces over OTLP/HTTP (off unless configured).

pub mod api;
pub mod clients;
pub mod config;
pub mod contract;
pub mod error;
pub mod gateway;
pub mod inspect;
pub mod keys;
pub mod log_format;
pub mod logging;
pub mod memory;
pub mod otel;
pub mod reload;
pub mod request_id;
pub mod routing;
pub mod runtime;
pub mod scrub;
pub mod telemetry;
pub mod upstream;
