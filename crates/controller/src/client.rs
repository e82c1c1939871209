//! The controller's API client: every request and watch on one HTTP/2 connection.
//!
//! kube's own client speaks HTTP/1.1, one connection per request in flight. In a storm the
//! controller has hundreds of requests in flight: as many TLS connections, each with its
//! own buffers (about 40 KiB), kept idle in the pool afterwards. On HTTP/2 they are streams
//! of one connection, as for client-go. A connection that stops answering (an API server
//! stalled, a network cut that sends no reset) would stall every stream at once: pings
//! every 30 s, given 15 s to be answered, close it, and the next request opens a new one
//! (client-go's health check uses the same times).

use std::time::Duration;

use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::ConfigExt;
use tower::ServiceBuilder;

/// How often an idle connection is pinged, and how long the answer may take.
const PING_EVERY: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// A client for `config`; `on_request` sees each request as it goes out.
pub fn http2_client<F>(config: kube::Config, on_request: F) -> kube::Result<kube::Client>
where
    F: Fn(&http::Request<kube::client::Body>) + Clone + Send + Sync + 'static,
{
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    // HTTP/2 writes a request's HEADERS and DATA frames apart: with Nagle's algorithm the
    // second waits for the first's (delayed) ACK, some 40 ms a request.
    http.set_nodelay(true);
    http.set_connect_timeout(config.connect_timeout);
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http();
    let tls = match &config.tls_server_name {
        Some(name) => {
            let name = rustls_pki_types::ServerName::try_from(name.clone()).map_err(|e| {
                kube::Error::Service(format!("tls-server-name {name:?}: {e}").into())
            })?;
            tls.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => tls,
    };
    let https = tls.enable_http1().enable_http2().wrap_connector(http);
    let client: HttpClient<_, kube::client::Body> = HttpClient::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(PING_EVERY)
        .http2_keep_alive_timeout(PING_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .build(https);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_request(move |req: http::Request<kube::client::Body>| {
            on_request(&req);
            req
        })
        .map_err(|e: hyper_util::client::legacy::Error| -> tower::BoxError { Box::new(e) })
        .service(client);
    Ok(kube::Client::new(service, config.default_namespace))
}
