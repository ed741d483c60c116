//! A bare axum + reqwest reverse proxy: `POST <path>` is sent to `<upstream><path>` with its
//! body and content type, and the upstream's status, content type and body (streamed) come
//! back. It exists only to measure what chatd's HTTP stack costs before chatd does anything.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3230")]
    bind: String,
    /// Base URL requests are forwarded to, e.g. http://127.0.0.1:11434.
    #[arg(long)]
    upstream: String,
}

#[derive(Clone)]
struct Proxy {
    client: reqwest::Client,
    upstream: String,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .expect("HTTP client");
    let proxy = Proxy {
        client,
        upstream: args.upstream.trim_end_matches('/').to_owned(),
    };
    let app = Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .expect("bind");
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    eprintln!("passthrough listening on {}", args.bind);
    axum::serve(listener, app).await.expect("serve");
}

async fn forward(
    State(proxy): State<Proxy>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut request = proxy
        .client
        .post(format!("{}{}", proxy.upstream, uri.path()))
        .body(body);
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        request = request.header(header::CONTENT_TYPE, ct);
    }
    match request.send().await {
        Ok(upstream) => {
            let status =
                StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut response = Response::builder().status(status);
            if let Some(ct) = upstream.headers().get(header::CONTENT_TYPE) {
                response = response.header(header::CONTENT_TYPE, ct.as_bytes());
            }
            response
                .body(Body::from_stream(upstream.bytes_stream()))
                .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
