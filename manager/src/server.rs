//! `ferry serve`: the mailboxes, the jobs and (mounted by the caller) the
//! image library over HTTPS, with rustls and axum.
//!
//! Authentication is one middleware over the whole router
//! ([`authenticate`]): it turns a bearer token or a capability query into a
//! [`Principal`] in the request's extensions, or answers 401/403 itself.
//! Handlers then check the principal's scope. The image library is mounted
//! with [`app`]'s `library` argument, behind [`guard_library`]; see
//! MAILBOX.md for the API and the permission table. The server keeps no
//! state: everything is in the [`MailStore`], and a background task drives
//! jobs once a second.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agent::mailbox::{now_ms, Action, MailboxId, MessageKind, HEARTBEAT, MAX_FILE, STATUS};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::auth::{may_access_file, Principal, Secret};
use crate::jobs;
use crate::store::MailStore;

/// The mailbox marker written at enrollment.
pub const MAILBOX_MARKER: &str = "mailbox.json";

/// What every handler shares.
pub struct ServerState {
    /// The token secret.
    pub secret: Secret,
    /// Mailboxes and jobs.
    pub store: MailStore,
    /// Heartbeats missed before an agent is offline.
    pub offline_factor: u32,
}

/// An error answer: a status and `{"error": ...}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn new(code: StatusCode, msg: impl Into<String>) -> ApiError {
        ApiError(code, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        tracing::warn!("store: {e}");
        ApiError::new(StatusCode::BAD_GATEWAY, e.to_string())
    }
}

impl From<jobs::JobError> for ApiError {
    fn from(e: jobs::JobError) -> ApiError {
        tracing::warn!("jobs: {e}");
        let code = match e {
            jobs::JobError::Empty => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError::new(code, e.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn forbidden() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "not allowed with these credentials")
}

fn unauthorized() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "credentials required")
}

/// The principal the middleware found, or 401.
fn who(p: &Option<Extension<Principal>>) -> ApiResult<&Principal> {
    p.as_ref().map(|e| &e.0).ok_or_else(unauthorized)
}

fn operator(p: &Option<Extension<Principal>>) -> ApiResult<()> {
    match who(p)? {
        Principal::Operator => Ok(()),
        _ => Err(forbidden()),
    }
}

/// The authentication middleware: a valid bearer token or capability
/// becomes a [`Principal`] extension; invalid ones are refused here (401 for
/// a bad token, 403 for a bad or expired capability); requests without
/// credentials pass without a principal (for `/pxe/`), and handlers that
/// need one answer 401.
pub async fn authenticate(
    State(state): State<Arc<ServerState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let bearer = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("").to_string());
    let principal = if let Some(h) = bearer {
        let Some(token) = h.strip_prefix("Bearer ") else {
            return ApiError::new(StatusCode::UNAUTHORIZED, "expected a Bearer token")
                .into_response();
        };
        match state.secret.check_token(token.trim()) {
            Some(p) => Some(p),
            None => {
                return ApiError::new(StatusCode::UNAUTHORIZED, "invalid token").into_response()
            }
        }
    } else if let Some(q) = req.uri().query().filter(|q| q.contains("sig=")) {
        let path = req.uri().path().to_string();
        let now_s = now_ms() / 1000;
        if !state.secret.check_capability(&path, q, now_s) {
            return ApiError::new(StatusCode::FORBIDDEN, "invalid or expired capability")
                .into_response();
        }
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return forbidden().into_response();
        }
        Some(Principal::Capability(path))
    } else {
        None
    };
    if let Some(p) = principal {
        req.extensions_mut().insert(p);
    }
    next.run(req).await
}

/// The library's access rules, as a middleware on the nested library
/// router: operator read/write; an agent reads, writes only objects that
/// do not exist yet (checked against `store`), and deletes only under
/// `relay/` (a direct migration's receiver acknowledges each segment by
/// deleting it; see `imaging::direct`); a capability reads the one object
/// it names (the path was checked by [`authenticate`]).
pub fn guard_library(library: Router, store: Arc<dyn imaging::store::Store>) -> Router {
    library.layer(middleware::from_fn(move |req: Request, next: Next| {
        let store = store.clone();
        async move {
            let principal = req.extensions().get::<Principal>().cloned();
            let method = req.method().clone();
            let allowed = match principal {
                None => return unauthorized().into_response(),
                Some(Principal::Operator) => true,
                Some(Principal::Enroll) => false,
                Some(Principal::Capability(_)) => matches!(method, Method::GET | Method::HEAD),
                Some(Principal::Agent(_)) => match method {
                    Method::GET | Method::HEAD => true,
                    Method::PUT => {
                        // library_http serves objects at /o/<key>.
                        let path = req.uri().path().trim_start_matches('/');
                        let Some(key) = path.strip_prefix("o/").map(str::to_string) else {
                            return forbidden().into_response();
                        };
                        let exists = tokio::task::spawn_blocking(move || {
                            store
                                .list(&key)
                                .map(|l| l.iter().any(|o| o.key == key))
                                .unwrap_or(true)
                        })
                        .await
                        .unwrap_or(true);
                        !exists
                    }
                    Method::DELETE => req
                        .uri()
                        .path()
                        .trim_start_matches('/')
                        .strip_prefix("o/relay/")
                        .is_some_and(|rest| rest.contains('/')),
                    _ => false,
                },
            };
            if allowed {
                next.run(req).await
            } else {
                forbidden().into_response()
            }
        }
    }))
}

/// The whole application. `library`, when given, is the image library's
/// router (`manager::library_http::router(store)`) and its store; it is
/// mounted at `/v1/library` behind [`guard_library`]. `pxe` is served
/// read-only, without authentication, at `/pxe/`.
pub fn app(
    state: Arc<ServerState>,
    library: Option<(Router, Arc<dyn imaging::store::Store>)>,
    pxe: Option<PathBuf>,
) -> Router {
    let mut app = Router::new()
        .route("/v1/enroll", post(enroll))
        .route("/v1/mailboxes", get(list_mailboxes).post(create_mailbox))
        .route("/v1/mailboxes/{id}", axum::routing::delete(delete_mailbox))
        .route("/v1/mailboxes/{id}/", get(list_files))
        .route(
            "/v1/mailboxes/{id}/{file}",
            get(get_file).put(put_file).delete(delete_file),
        )
        .route("/v1/caps", post(make_cap))
        .route("/v1/agents", get(agents))
        .route("/v1/jobs", get(list_jobs).post(create_job))
        .route("/v1/jobs/{job}", get(get_job))
        .layer(DefaultBodyLimit::max(MAX_FILE))
        .with_state(state.clone());
    // LIBRARY: the image library is mounted here, behind the library rules.
    // The lead's one-liner, in the CLI:
    //   manager::server::app(state, Some((manager::library_http::router(store.clone()), store)), pxe)
    if let Some((router, store)) = library {
        app = app.nest("/v1/library", guard_library(router, store));
    }
    if let Some(dir) = pxe {
        app = app.nest_service("/pxe", tower_http::services::ServeDir::new(dir));
    }
    app.layer(middleware::from_fn_with_state(state, authenticate))
}

#[derive(Deserialize, Default)]
struct EnrollBody {
    #[serde(default)]
    id: Option<MailboxId>,
}

#[derive(Serialize)]
struct Enrolled {
    id: MailboxId,
    token: String,
}

async fn new_mailbox(state: &ServerState, id: Option<MailboxId>) -> ApiResult<Response> {
    let id = match id {
        Some(id) => id,
        None => MailboxId::generate().map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("getrandom: {e}"))
        })?,
    };
    let marker = serde_json::json!({ "created_ms": now_ms() });
    let created = state
        .store
        .create(
            &jobs::mailbox_key(&id, MAILBOX_MARKER),
            Bytes::from(marker.to_string()),
        )
        .await?;
    if !created {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("mailbox {id} exists"),
        ));
    }
    tracing::info!(mailbox = %id, "mailbox created");
    let token = state.secret.agent_token(&id);
    Ok((StatusCode::CREATED, Json(Enrolled { id, token })).into_response())
}

fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("request body: {e}")))
}

async fn enroll(
    State(state): State<Arc<ServerState>>,
    p: Option<Extension<Principal>>,
    body: Bytes,
) -> ApiResult<Response> {
    if !matches!(who(&p)?, Principal::Enroll | Principal::Operator) {
        return Err(forbidden());
    }
    let b: EnrollBody = parse_body(&body)?;
    new_mailbox(&state, b.id).await
}

async fn create_mailbox(
    State(state): State<Arc<ServerState>>,
    p: Option<Extension<Principal>>,
    body: Bytes,
) -> ApiResult<Response> {
    operator(&p)?;
    let b: EnrollBody = parse_body(&body)?;
    new_mailbox(&state, b.id).await
}

async fn list_mailboxes(
    State(state): State<Arc<ServerState>>,
    p: Option<Extension<Principal>>,
) -> ApiResult<Json<Vec<String>>> {
    operator(&p)?;
    let ids = state.store.list_dirs("mailboxes").await?;
    Ok(Json(
        ids.into_iter()
            .filter(|i| MailboxId::parse(i).is_ok())
            .collect(),
    ))
}

fn parse_id(s: &str) -> ApiResult<MailboxId> {
    MailboxId::parse(s).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

fn check_name(file: &str) -> ApiResult<()> {
    let plain = !file.is_empty()
        && file.len() <= 128
        && !file.starts_with('.')
        && file
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.'));
    if plain {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{file:?} is not a mailbox file name"),
        ))
    }
}

async fn delete_mailbox(
    State(state): State<Arc<ServerState>>,
    p: Option<Extension<Principal>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    operator(&p)?;
    let id = parse_id(&id)?;
    state.store.delete_dir(&format!("mailboxes/{id}")).await?;
    tracing::info!(mailbox = %id, "mailbox deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn list_files(
    State(state): State<Arc<ServerState>>,
    p: Option<Extension<Principal>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<String>>> {
    let p = who(&p)?;
    let id = parse_id(&id)?;
    match p {
        Principal::Operator => {}
        Principal::Agent(own) if *own == id => {}
        _ => return Err(forbidden()),
    }
    let files = state.store.list_files(&format!("mailboxes/{id}")).await?;
    if files.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no mailbox {id}"),
        ));
    }
    Ok(Json(files))
}

fn file_access(
    p: &Option<Extension<Principal>>,
    method: &Method,
    id: &str,
    file: &str,
) -> ApiResult<MailboxId> {
    let p = who(p)?;
    let id = parse_id(id)?;
    check_name(file)?;
    if may_access_file(p, method.as_str(), &id, file) {
        Ok(id)
    } else {
        Err(forbidden())
    }
}

async fn get_file(
    State(state): State<Arc<ServerState>>,
    p: Option<Extension<Principal>>,
    method: Method,
    Path((id, file)): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = file_access(&p, &method, &id, &file)?;
    match state.store.get(&jobs::mailbox_key(&id, &file)).await? {
        Some(bytes) => Ok((
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            Body::from(bytes),
        )
            .into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("mailbox {id}: no {file}"),
        )),
    }
}

async fn put_file(
    State(state): State<Arc<ServerState>>,
    p: Option<Extension<Principal>>,
    headers: HeaderMap,
    Path((id, file)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let id = file_access(&p, &Method::PUT, &id, &file)?;
    let key = jobs::mailbox_key(&id, &file);
    let create_only = headers
        .get(axum::http::header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == b"*");
    if create_only {
        if state.store.create(&key, body).await? {
            Ok(StatusCode::CREATED)
        } else {
            Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                format!("mailbox {id}: {file} exists (write-once)"),
            ))
        }
    } else if file == STATUS || file == HEARTBEAT {
        state.store.replace(&key, body).await?;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            format!("{file} is write-once: send If-None-Match: *"),
        ))
    }
}

async fn delete_file(
    State(state): State<Arc<ServerState>>,
    p: Option<Extension<Principal>>,
    Path((id, file)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = file_access(&p, &Method::DELETE, &id, &file)?;
    if file == MAILBOX_MARKER {
        return Err(forbidden());
    }
    state.store.delete(&jobs::mailbox_key(&id, &file)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct CapBody {
    path: String,
    #[serde(default = "default_cap_ttl")]
    ttl_s: u64,
}

fn default_cap_ttl() -> u64 {
    3600
}

async fn make_cap(
    State(state): State<Arc<ServerState>>,
    p: Option<Extension<Principal>>,
    Json(b): Json<CapBody>,
) -> ApiResult<Response> {
    operator(&p)?;
    if !b.path.starts_with("/v1/mailboxes/") && !b.path.starts_with("/v1/library/") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "a capability is for /v1/mailboxes/<id>/<file> or /v1/library/<key>",
        ));
    }
    let exp = now_ms() / 1000 + b.ttl_s;
    let url = format!("{}?{}", b.path, state.secret.capability_query(&b.path, exp));
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "url": url, "exp": exp })),
    )
        .into_response())
}

#[derive(Deserialize)]
struct AgentsQuery {
    offline_factor: Option<u32>,
}

async fn agents(
    State(state): State<Arc<ServerState>>,
    p: Option<Extension<Principal>>,
    axum::extract::Query(q): axum::extract::Query<AgentsQuery>,
) -> ApiResult<Json<Vec<jobs::AgentView>>> {
    operator(&p)?;
    let factor = q.offline_factor.unwrap_or(state.offline_factor).max(1);
    Ok(Json(jobs::list_agents(&state.store, factor).await?))
}

#[derive(Deserialize)]
struct NewJob {
    agent: MailboxId,
    steps: Vec<Action>,
}

async fn create_job(
    State(state): State<Arc<ServerState>>,
    p: Option<Extension<Principal>>,
    Json(b): Json<NewJob>,
) -> ApiResult<Response> {
    operator(&p)?;
    if state
        .store
        .get(&jobs::mailbox_key(&b.agent, MAILBOX_MARKER))
        .await?
        .is_none()
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no mailbox {}", b.agent),
        ));
    }
    let def = jobs::create_job(&state.store, b.agent, b.steps).await?;
    tracing::info!(job = def.id, agent = %def.agent, steps = def.steps.len(), "job created");
    // Send the first step now rather than at the next tick.
    jobs::drive(&state.store, &def.id).await?;
    let view = jobs::view(&state.store, &def.id, state.offline_factor).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn list_jobs(
    State(state): State<Arc<ServerState>>,
    p: Option<Extension<Principal>>,
) -> ApiResult<Json<Vec<jobs::JobView>>> {
    operator(&p)?;
    let mut out = Vec::new();
    for id in jobs::list_jobs(&state.store).await? {
        if let Some(v) = jobs::view(&state.store, &id, state.offline_factor).await? {
            out.push(v);
        }
    }
    Ok(Json(out))
}

async fn get_job(
    State(state): State<Arc<ServerState>>,
    p: Option<Extension<Principal>>,
    Path(job): Path<String>,
) -> ApiResult<Json<jobs::JobView>> {
    operator(&p)?;
    if !jobs::valid_job_id(&job) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad job id"));
    }
    jobs::view(&state.store, &job, state.offline_factor)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no job {job}")))
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A certificate or key did not load.
    #[error("{path}: {reason}")]
    Tls {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The listening socket failed.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A rustls server configuration from PEM files.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<rustls::ServerConfig, ServeError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let tls_err = |p: &std::path::Path, reason: String| ServeError::Tls {
        path: p.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_err(cert, e.to_string()))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_err(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| tls_err(cert, e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// How long a client has for its TLS handshake and request headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` over TLS on `listener` until the process ends; also drives
/// jobs once a second. `ready` is called with the bound address.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: rustls::ServerConfig,
    app: Router,
    state: Arc<ServerState>,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let driver_state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            jobs::drive_all(&driver_state.store).await;
        }
    });
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection: {e}");
            }
        });
    }
}

/// Binds `addr`.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })
}

/// Whether `name` is a message file of the given kind (for tests and
/// tools).
pub fn is_message(name: &str, kind: MessageKind) -> bool {
    MessageKind::parse_name(name).is_some_and(|(k, _)| k == kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request as HttpRequest;
    use tower::ServiceExt;

    fn setup(d: &std::path::Path) -> (Arc<ServerState>, Router) {
        let secret = Secret::generate().expect("secret");
        let store =
            MailStore::open(&format!("file://{}", d.join("store").display())).expect("store");
        let state = Arc::new(ServerState {
            secret,
            store,
            offline_factor: 3,
        });
        let lib_store: Arc<dyn imaging::store::Store> =
            Arc::new(imaging::store::LocalStore::new(d.join("lib")));
        lib_store.put("packs/a", b"A").expect("put");
        let library = crate::library_http::router(lib_store.clone());
        let pxe = d.join("pxe");
        std::fs::create_dir_all(&pxe).expect("pxe");
        std::fs::write(pxe.join("vmlinuz"), b"kernel").expect("kernel");
        let app = app(state.clone(), Some((library, lib_store)), Some(pxe));
        (state, app)
    }

    async fn status(app: &Router, method: &str, uri: &str, token: Option<&str>) -> StatusCode {
        let mut b = HttpRequest::builder().method(method).uri(uri);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = b.body(Body::empty()).expect("request");
        app.clone().oneshot(req).await.expect("response").status()
    }

    #[tokio::test]
    async fn library_and_pxe_rules() {
        let d = tempfile::tempdir().expect("tempdir");
        let (state, app) = setup(d.path());
        let op = state.secret.operator_token();
        let id = MailboxId::generate().expect("id");
        let agent = state.secret.agent_token(&id);
        let enroll = state.secret.enroll_token();
        let lib = "/v1/library/o/packs/a";
        assert_eq!(status(&app, "GET", lib, Some(&op)).await, StatusCode::OK);
        assert_eq!(status(&app, "GET", lib, Some(&agent)).await, StatusCode::OK);
        assert_eq!(
            status(&app, "PUT", lib, Some(&agent)).await,
            StatusCode::FORBIDDEN,
            "exists"
        );
        assert!(status(&app, "PUT", "/v1/library/o/packs/b", Some(&agent))
            .await
            .is_success());
        assert_eq!(
            status(&app, "DELETE", lib, Some(&agent)).await,
            StatusCode::FORBIDDEN
        );
        // A direct migration's receiver deletes relay segments, and only those.
        let seg = "/v1/library/o/relay/0123456789abcdef0123456789abcdef/0000000000";
        assert!(status(&app, "DELETE", seg, Some(&agent)).await.is_success());
        for other in ["/v1/library/o/relay", "/v1/library/o/relayx/a/b"] {
            assert_eq!(
                status(&app, "DELETE", other, Some(&agent)).await,
                StatusCode::FORBIDDEN,
                "{other}"
            );
        }
        assert_eq!(
            status(&app, "GET", lib, Some(&enroll)).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status(&app, "GET", lib, None).await,
            StatusCode::UNAUTHORIZED
        );
        let cap = format!(
            "{lib}?{}",
            state.secret.capability_query(lib, now_ms() / 1000 + 60)
        );
        assert_eq!(status(&app, "GET", &cap, None).await, StatusCode::OK);
        let other = cap.replace("packs/a", "packs/b");
        assert_eq!(
            status(&app, "GET", &other, None).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(status(&app, "PUT", &cap, None).await, StatusCode::FORBIDDEN);
        assert!(status(&app, "DELETE", lib, Some(&op)).await.is_success());
        // PXE media need no credentials and stay inside their directory.
        assert_eq!(
            status(&app, "GET", "/pxe/vmlinuz", None).await,
            StatusCode::OK
        );
        assert_ne!(
            status(&app, "GET", "/pxe/../store", None).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&app, "GET", "/pxe/none", None).await,
            StatusCode::NOT_FOUND
        );
    }
}
