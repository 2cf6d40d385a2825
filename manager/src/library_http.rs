//! The image library over HTTP: the routes `ferry serve` nests (behind its
//! auth layer) at `/v1/library`, and that `imaging::remote::http::HttpStore`
//! speaks.
//!
//! ```text
//! GET    /o/{*key}        whole object, or Range: bytes=a-b | a- | -n → 206 + Content-Range
//! HEAD   /o/{*key}        Content-Length = size, Accept-Ranges: bytes
//! PUT    /o/{*key}        body → Store::put (atomic); If-None-Match: * → 412 if it exists
//! DELETE /o/{*key}        204 (absent objects too)
//! GET    /list?prefix=P   [{"key": …, "size": …}] in key order
//! ```
//!
//! Keys are checked by `imaging::remote::check_key` (no `..`, nothing
//! absolute, only `[A-Za-z0-9._-/]`): 400 otherwise. No authentication
//! here: the caller's router adds it.
//!
//! **Memory.** GET bodies are streamed in [`PIECE`]-sized reads through a
//! channel of [`PIECES_QUEUED`], so a request holds at most a few MiB
//! whatever the object's size; store calls (synchronous) run on tokio's
//! blocking pool. PUT bodies are buffered whole (the `Store` contract is an
//! atomic put of a byte slice), bounded by [`MAX_PUT`]: packs are ~16 MiB.
//!
//! [`serve_tls`] runs a router over TLS (tokio-rustls); [`TestServer`]
//! serves a store with a fresh CA on a background thread, for tests and
//! the `library_server` example.

use std::io;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use imaging::remote::{check_key, check_prefix};
use imaging::store::Store;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Bytes read from the store per step of a streamed GET.
pub const PIECE: usize = 1 << 20;
/// Pieces buffered per streamed GET ahead of the client.
pub const PIECES_QUEUED: usize = 2;
/// The largest PUT body accepted (packs are ~16 MiB; index files grow with
/// the library, 40 bytes per chunk).
pub const MAX_PUT: usize = 512 << 20;

type SharedStore = Arc<dyn Store>;

/// The library routes over `store` (see the module docs).
pub fn router(store: Arc<dyn Store>) -> Router {
    Router::new()
        .route(
            "/o/{*key}",
            get(get_object)
                .head(head_object)
                .put(put_object)
                .delete(delete_object),
        )
        .route("/list", get(list))
        .layer(DefaultBodyLimit::max(MAX_PUT))
        .with_state(store)
}

/// An error answer: a status and a one-line text body.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

fn io_failure(op: &str, key: &str, e: io::Error) -> Failure {
    let status = match e.kind() {
        io::ErrorKind::NotFound => StatusCode::NOT_FOUND,
        io::ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        io::ErrorKind::AlreadyExists => StatusCode::PRECONDITION_FAILED,
        io::ErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
        _ => {
            tracing::warn!("library: {op} {key}: {e}");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    Failure(status, format!("{op} {key}: {e}"))
}

fn valid(key: &str) -> Result<(), Failure> {
    check_key(key).map_err(|r| Failure(StatusCode::BAD_REQUEST, r))
}

/// Runs a synchronous store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("store task failed: {e}")))?
}

/// A parsed `Range` header against an object of `size` bytes: `Ok(None)`
/// for no (or an ignorable) header, the inclusive range otherwise.
fn parse_range(h: Option<&HeaderValue>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = h.and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None); // unknown unit: ignored, as RFC 9110 allows
    };
    if spec.contains(',') {
        return Err(()); // multiple ranges are not served
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (first, last) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || size == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let first: u64 = a.parse().map_err(|_| ())?;
        let last = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1))
        };
        (first, last)
    };
    if first >= size || last < first {
        return Err(());
    }
    Ok(Some((first, last)))
}

async fn head_object(
    State(store): State<SharedStore>,
    Path(key): Path<String>,
) -> Result<Response, Failure> {
    valid(&key)?;
    let k = key.clone();
    let size = blocking(move || store.size(&k))
        .await
        .map_err(|e| io_failure("HEAD", &key, e))?;
    Ok((
        [
            (header::CONTENT_LENGTH, size.to_string()),
            (header::ACCEPT_RANGES, "bytes".to_string()),
        ],
        (),
    )
        .into_response())
}

async fn get_object(
    State(store): State<SharedStore>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    valid(&key)?;
    let (s, k) = (store.clone(), key.clone());
    let size = blocking(move || s.size(&k))
        .await
        .map_err(|e| io_failure("GET", &key, e))?;
    let (status, first, len) = match parse_range(headers.get(header::RANGE), size) {
        Ok(None) => (StatusCode::OK, 0, size),
        Ok(Some((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        Err(()) => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
                "range not satisfiable",
            )
                .into_response())
        }
    };
    let body = stream_body(store, key, first, len);
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        let cr = format!("bytes {first}-{}/{size}", first + len - 1);
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&cr).expect("digits and spaces are a valid header"),
        );
    }
    Ok(resp)
}

/// `len` bytes of `key` from `first`, read piece by piece on the blocking
/// pool. A read error ends the body early, which the client sees as a cut
/// (and retries); it never sees wrong bytes as complete.
fn stream_body(store: SharedStore, key: String, first: u64, len: u64) -> Body {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(PIECES_QUEUED);
    tokio::task::spawn_blocking(move || {
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(PIECE as u64) as usize;
            let mut buf = vec![0u8; n];
            let r = store
                .read_at(&key, first + done, &mut buf)
                .map(|()| Bytes::from(buf))
                .map_err(|e| io::Error::new(e.kind(), format!("reading {key}: {e}")));
            let failed = r.is_err();
            if let Err(e) = &r {
                tracing::warn!("library: GET {e}");
            }
            if tx.blocking_send(r).is_err() || failed {
                return; // client gone, or the error is sent
            }
            done += n as u64;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Body::from_stream(stream)
}

async fn put_object(
    State(store): State<SharedStore>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Failure> {
    valid(&key)?;
    let create_only = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == b"*");
    let k = key.clone();
    blocking(move || {
        if create_only {
            store.put_new(&k, &body)
        } else {
            store.put(&k, &body)
        }
    })
    .await
    .map_err(|e| io_failure("PUT", &key, e))?;
    Ok(StatusCode::CREATED)
}

async fn delete_object(
    State(store): State<SharedStore>,
    Path(key): Path<String>,
) -> Result<StatusCode, Failure> {
    valid(&key)?;
    let k = key.clone();
    blocking(move || store.delete(&k))
        .await
        .map_err(|e| io_failure("DELETE", &key, e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
}

/// One entry of a listing.
#[derive(Serialize)]
struct ListEntry {
    key: String,
    size: u64,
}

async fn list(
    State(store): State<SharedStore>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<ListEntry>>, Failure> {
    check_prefix(&q.prefix).map_err(|r| Failure(StatusCode::BAD_REQUEST, r))?;
    let prefix = q.prefix.clone();
    let objects = blocking(move || store.list(&prefix))
        .await
        .map_err(|e| io_failure("LIST", &q.prefix, e))?;
    Ok(Json(
        objects
            .into_iter()
            // The store's own files (a local store's lock, temp files) are
            // not library objects.
            .filter(|o| check_key(&o.key).is_ok() && !o.key.starts_with("tmp/"))
            .map(|o| ListEntry {
                key: o.key,
                size: o.size,
            })
            .collect(),
    ))
}

pub use tls::{
    serve_tls, server_config, test_certificates, test_certificates_for, TestServer, TlsListener,
};

mod tls {
    //! TLS for the library routes outside `ferry serve`: a listener that
    //! handshakes off the accept loop, and a self-contained test server.

    use std::future::Future;
    use std::io;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use axum::Router;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::server::TlsStream;
    use tokio_rustls::TlsAcceptor;

    /// How long a client may take to finish its TLS handshake.
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

    /// TLS connections for `axum::serve`: handshakes run in their own tasks,
    /// so a slow or failing client never blocks the others.
    pub struct TlsListener {
        rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
        local: SocketAddr,
    }

    impl TlsListener {
        /// Accepts on `tcp`, handshaking with `config`.
        pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> io::Result<TlsListener> {
            let local = tcp.local_addr()?;
            let (tx, rx) = mpsc::channel(64);
            let acceptor = TlsAcceptor::from(config);
            tokio::spawn(async move {
                loop {
                    let (sock, peer) = match tcp.accept().await {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!("accept: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = sock.set_nodelay(true);
                    let (acceptor, tx) = (acceptor.clone(), tx.clone());
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                            Ok(Ok(tls)) => {
                                let _ = tx.send((tls, peer)).await;
                            }
                            Ok(Err(e)) => tracing::debug!("TLS handshake with {peer}: {e}"),
                            Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
                        }
                    });
                }
            });
            Ok(TlsListener { rx, local })
        }
    }

    impl axum::serve::Listener for TlsListener {
        type Io = TlsStream<TcpStream>;
        type Addr = SocketAddr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            match self.rx.recv().await {
                Some(x) => x,
                // The accept task lives as long as the runtime.
                None => std::future::pending().await,
            }
        }

        fn local_addr(&self) -> io::Result<SocketAddr> {
            Ok(self.local)
        }
    }

    /// A rustls server config for one certificate chain and key (PEM).
    pub fn server_config(cert_pem: &str, key_pem: &str) -> io::Result<Arc<ServerConfig>> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("key: {e}")))?;
        let mut cfg = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// Serves `app` over TLS on `tcp` until `shutdown` completes.
    pub async fn serve_tls(
        tcp: TcpListener,
        config: Arc<ServerConfig>,
        app: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let listener = TlsListener::new(tcp, config)?;
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// A CA and a server certificate for `127.0.0.1`/`localhost` signed by it:
    /// (CA PEM, server chain PEM, server key PEM).
    pub fn test_certificates() -> Result<(String, String, String), rcgen::Error> {
        test_certificates_for(&[])
    }

    /// [`test_certificates`], the server's also valid for `names` (IP
    /// addresses or DNS names).
    pub fn test_certificates_for(
        names: &[String],
    ) -> Result<(String, String, String), rcgen::Error> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "ferry test CA");
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = KeyPair::generate()?;
        let mut sans = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        for n in names {
            if !n.is_empty() && !sans.contains(n) {
                sans.push(n.clone());
            }
        }
        let params = CertificateParams::new(sans)?;
        let cert = params.signed_by(&key, &issuer)?;
        // The chain ends with the CA, as `ferry serve --init` writes it, so
        // clients that pin the CA by fingerprint find it there.
        let chain = format!("{}{}", cert.pem(), ca_cert.pem());
        Ok((ca_cert.pem(), chain, key.serialize_pem()))
    }

    /// A library server on a background thread: the routes of
    /// [`super::router`] over TLS with a fresh CA, no auth. Dropping it (or
    /// [`TestServer::kill`]) stops the runtime, cutting open connections as
    /// a crash would.
    pub struct TestServer {
        /// `https://127.0.0.1:PORT/v1/library`.
        pub url: String,
        /// The address it listens on.
        pub addr: SocketAddr,
        /// The CA PEM to trust.
        pub ca_pem: String,
        stop: Option<std::sync::mpsc::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl TestServer {
        /// Serves `store` on `addr` (port 0 for any) under `/v1/library`,
        /// wrapping the routes with `wrap` (identity for the plain routes; a
        /// test injects faults there).
        pub fn start(
            store: Arc<dyn imaging::store::Store>,
            addr: &str,
            wrap: impl FnOnce(Router) -> Router + Send + 'static,
        ) -> io::Result<TestServer> {
            let host = addr
                .parse::<SocketAddr>()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let (ca_pem, chain, key) =
                test_certificates_for(&[host]).map_err(|e| io::Error::other(e.to_string()))?;
            TestServer::start_with(store, addr, &ca_pem, &chain, &key, wrap)
        }

        /// [`TestServer::start`] with a given CA and certificate (so a
        /// restarted server keeps the CA clients trust).
        pub fn start_with(
            store: Arc<dyn imaging::store::Store>,
            addr: &str,
            ca_pem: &str,
            chain: &str,
            key: &str,
            wrap: impl FnOnce(Router) -> Router + Send + 'static,
        ) -> io::Result<TestServer> {
            let config = server_config(chain, key)?;
            let std_listener = std::net::TcpListener::bind(addr)?;
            std_listener.set_nonblocking(true)?;
            let local = std_listener.local_addr()?;
            let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
            let thread = std::thread::Builder::new()
                .name("library-test-server".into())
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let app = Router::new().nest("/v1/library", wrap(super::router(store)));
                    rt.spawn(async move {
                        let tcp = match TcpListener::from_std(std_listener) {
                            Ok(t) => t,
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                                return;
                            }
                        };
                        let _ = ready_tx.send(Ok(()));
                        if let Err(e) = serve_tls(tcp, config, app, std::future::pending()).await {
                            tracing::warn!("test server: {e}");
                        }
                    });
                    // Block until told to stop (or the handle is dropped),
                    // then drop the runtime: every connection is cut.
                    let _ = stop_rx.recv();
                    rt.shutdown_timeout(Duration::from_millis(100));
                })?;
            ready_rx
                .recv()
                .map_err(|_| io::Error::other("test server thread died"))??;
            Ok(TestServer {
                url: format!("https://{local}/v1/library"),
                addr: local,
                ca_pem: ca_pem.to_string(),
                stop: Some(stop_tx),
                thread: Some(thread),
            })
        }

        /// Stops the server at once, cutting its connections.
        pub fn kill(mut self) {
            self.stop_now();
        }

        fn stop_now(&mut self) {
            drop(self.stop.take());
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.stop_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let h = |s: &'static str| Some(HeaderValue::from_static(s));
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(h("bytes=0-3").as_ref(), 10), Ok(Some((0, 3))));
        assert_eq!(parse_range(h("bytes=5-").as_ref(), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(h("bytes=-4").as_ref(), 10), Ok(Some((6, 9))));
        assert_eq!(parse_range(h("bytes=8-99").as_ref(), 10), Ok(Some((8, 9))));
        assert_eq!(parse_range(h("bytes=10-12").as_ref(), 10), Err(()));
        assert_eq!(parse_range(h("bytes=4-2").as_ref(), 10), Err(()));
        assert_eq!(parse_range(h("bytes=0-1,3-4").as_ref(), 10), Err(()));
        assert_eq!(parse_range(h("bytes=x-1").as_ref(), 10), Err(()));
        assert_eq!(parse_range(h("items=0-1").as_ref(), 10), Ok(None));
    }
}
