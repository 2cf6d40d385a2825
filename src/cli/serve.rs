//! `ferry serve`: initialise a server directory, or run the HTTPS mailbox
//! server over a directory or S3 store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use manager::init;
use manager::server::{self, ServerState};

/// Arguments of `ferry serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// The server's directory: CA, certificate, keys, secret, tokens (and
    /// by default the store, in DIR/store).
    #[arg(long, env = "FERRY_SERVER_DIR")]
    dir: PathBuf,
    /// Create the CA, the server certificate, the secret and the operator
    /// and enrollment tokens in DIR, print them, and exit.
    #[arg(long)]
    init: bool,
    /// With --init: another name or IP address for the server certificate
    /// (localhost, 127.0.0.1 and 10.0.2.2 are always in). Repeatable.
    #[arg(long = "san", requires = "init")]
    sans: Vec<String>,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Where mailboxes and jobs live: file:///path or
    /// s3://bucket/prefix?endpoint=http://host:port (credentials from AWS_*).
    /// Default: file://DIR/store.
    #[arg(long, env = "FERRY_STORE")]
    store: Option<String>,
    /// Serve this directory read-only, without authentication, at /pxe/
    /// (kernels and initramfs images; see MAILBOX.md on what they must not
    /// contain).
    #[arg(long)]
    pxe: Option<PathBuf>,
    /// Heartbeat intervals missed before an agent counts as offline.
    #[arg(long, default_value_t = agent::mailbox::DEFAULT_OFFLINE_FACTOR)]
    offline_factor: u32,
}

/// Runs `ferry serve`.
pub fn run(library: &std::path::Path, a: ServeArgs) -> anyhow::Result<ExitCode> {
    if a.init {
        let out = init::init(&a.dir, &a.sans)
            .with_context(|| format!("initialising {}", a.dir.display()))?;
        println!("server directory: {}", out.dir.display());
        println!("certificate names: {}", out.sans.join(", "));
        println!("CA fingerprint: sha256:{}", out.ca_fingerprint);
        println!("operator token: {}", out.operator_token);
        println!("enrollment token: {}", out.enroll_token);
        println!(
            "boot media: ferry.ca=sha256:{} (or embed {})",
            out.ca_fingerprint,
            out.dir.join(init::CA_FILE).display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let secret =
        manager::auth::Secret::load(&a.dir.join(init::SECRET_FILE)).with_context(|| {
            format!(
                "{} is not a server directory; run `ferry serve --init --dir {0}` first",
                a.dir.display()
            )
        })?;
    let dir =
        std::path::absolute(&a.dir).with_context(|| format!("resolving {}", a.dir.display()))?;
    let store_url = a
        .store
        .clone()
        .unwrap_or_else(|| format!("file://{}", dir.join("store").display()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let store = manager::store::MailStore::open(&store_url)?;
        // The chain sent is the server certificate and the CA, so an agent
        // pinning the CA's fingerprint finds it.
        let chain = dir.join(".chain.pem");
        let mut pem = std::fs::read(dir.join(init::CERT_FILE))
            .with_context(|| format!("reading {}", dir.join(init::CERT_FILE).display()))?;
        pem.extend(
            std::fs::read(dir.join(init::CA_FILE))
                .with_context(|| format!("reading {}", dir.join(init::CA_FILE).display()))?,
        );
        init::write_private(&dir, ".chain.pem", &pem)?;
        let tls = server::tls_config(&chain, &dir.join(init::KEY_FILE))?;
        let state = Arc::new(ServerState {
            secret,
            store,
            offline_factor: a.offline_factor.max(1),
        });
        // The image library (--library: a directory, created if new, or an
        // s3:// URL) at /v1/library, behind the library's auth rules.
        let lib_store = library_store(library)?;
        let lib_router = manager::library_http::router(lib_store.clone());
        let app = server::app(state.clone(), Some((lib_router, lib_store)), a.pxe.clone());
        let listener = server::bind(a.listen).await?;
        let addr = listener.local_addr().context("reading the bound address")?;
        tracing::info!(store = store_url, "serving");
        eprintln!("ferry serve: listening on https://{addr} (store {store_url})");
        server::serve(listener, tls, app, state)
            .await
            .context("serving")?;
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    })
}

/// The store of the library `ferry serve` exposes: `--library` as a
/// network URL, or a local directory (made a library if it is new).
fn library_store(library: &std::path::Path) -> anyhow::Result<Arc<dyn imaging::store::Store>> {
    if let Some(store) = super::remote_store(library)? {
        return Ok(Arc::from(store));
    }
    imaging::Library::open_or_create_local(library)
        .with_context(|| format!("opening library {}", library.display()))?;
    Ok(Arc::new(imaging::store::LocalStore::new(library)))
}
