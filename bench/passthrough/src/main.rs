//! A bare axum + hyper-client reverse proxy: `POST <path>` is sent to `<upstream><path>` with its
//! body and content type, and the upstream's status, content type and body (streamed) come
//! back. It exists only to measure what chatd's HTTP stack costs before chatd does anything.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3230")]
    bind: String,
    /// Base URL requests are forwarded to, e.g. http://127.0.0.1:11434.
    #[arg(long)]
    upstream: String,
}

type Client = hyper_util::client::legacy::Client<HttpConnector, http_body_util::Full<Bytes>>;

#[derive(Clone)]
struct Proxy {
    client: Client,
    upstream: String,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build(connector);
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
    let mut request = Request::post(format!("{}{}", proxy.upstream, uri.path()));
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        request = request.header(header::CONTENT_TYPE, ct);
    }
    let Ok(request) = request.body(http_body_util::Full::new(body)) else {
        return (StatusCode::BAD_REQUEST, "bad request URI").into_response();
    };
    match proxy.client.request(request).await {
        Ok(upstream) => {
            let mut response = Response::builder().status(upstream.status());
            if let Some(ct) = upstream.headers().get(header::CONTENT_TYPE) {
                response = response.header(header::CONTENT_TYPE, ct.as_bytes());
            }
            response
                .body(Body::new(upstream.into_body()))
                .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
