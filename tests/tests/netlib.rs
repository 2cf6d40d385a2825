//! Libraries over the network (issue 7): capture into and restore from a
//! library served over real HTTPS (manager's library routes on a test
//! server with its own CA) and one in S3 (moto's server), byte-identical;
//! a misbehaving server (500s, wrong lengths, garbage bytes) costs retries
//! or a clear error, never a wrong byte on disk; a restore cut by a server
//! crash completes when rerun, refetching little.
//!
//! Needs the `ferry` binary (see ferry_tests::ferry_bin); the S3 test needs
//! `moto_server` (`pip install 'moto[server]'`, which ./run test does) and
//! skips loudly without it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use ferry_tests::{ferry, json, ok, write_disk_like};
use imaging::remote::http::HttpStore;
use imaging::remote::RemoteOptions;
use imaging::store::{LocalStore, Store};
use imaging::{Library, NoProgress, RestoreOptions};
use manager::library_http::TestServer;

fn server(dir: &Path) -> TestServer {
    TestServer::start(Arc::new(LocalStore::new(dir)), "127.0.0.1:0", |r| r).expect("test server")
}

fn options(ca: &str) -> RemoteOptions {
    RemoteOptions {
        trust: Some(imaging::remote::tls::Trust::CaPem(ca.as_bytes().to_vec())),
        backoff: Duration::from_millis(20),
        ..Default::default()
    }
}

fn remote_library(url: &str, ca: &str, attempts: u32) -> Library {
    let store = HttpStore::new(
        url,
        &RemoteOptions {
            attempts,
            ..options(ca)
        },
    )
    .expect("client");
    Library::open(Box::new(store)).expect("opens over HTTPS")
}

/// An agent whose boot medium carries only the CA's fingerprint
/// (`ferry.ca=sha256:…`) reaches the library with it; a wrong pin is
/// refused, naming the URL.
#[test]
fn a_pinned_ca_fingerprint_opens_the_library() {
    use imaging::remote::tls::{pem_fingerprint, Trust};
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("disk.img");
    write_disk_like(&img, 4, 11);
    let lib_dir = dir.path().join("served");
    local_capture(&lib_dir, &img, "pinned");
    let srv = server(&lib_dir);
    let pin = pem_fingerprint(srv.ca_pem.as_bytes()).expect("a certificate");
    let opts = |pin: &str| RemoteOptions {
        trust: Some(Trust::parse(pin).expect("pin")),
        attempts: 1,
        ..Default::default()
    };
    let store = HttpStore::new(&srv.url, &opts(&pin)).expect("client");
    let lib = Library::open(Box::new(store)).expect("opens with the pinned CA");
    assert!(lib.manifest("pinned").is_ok());
    let wrong = format!("sha256:{}", "00".repeat(32));
    let store = HttpStore::new(&srv.url, &opts(&wrong)).expect("client");
    let err = Library::open(Box::new(store))
        .err()
        .expect("a wrong pin is refused");
    assert!(err.to_string().contains(&srv.url), "{err}");
}

/// Captures `img` as `name` into a new local library at `dir`.
fn local_capture(dir: &Path, img: &Path, name: &str) {
    ok(ferry(dir).arg("capture").arg(img).args(["--name", name]));
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::read(a).expect("read a") == std::fs::read(b).expect("read b")
}

#[test]
fn capture_and_restore_over_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("disk.img");
    write_disk_like(&img, 40, 7);
    let srv = server(&dir.path().join("served"));
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &srv.ca_pem).expect("ca");
    let url = Path::new(&srv.url);

    // Capture through the server: the library is created remotely.
    ok(ferry(url)
        .env("FERRY_CA", &ca)
        .arg("capture")
        .arg(&img)
        .args(["--name", "v1"]));
    assert!(
        dir.path().join("served/ferry-library.json").is_file(),
        "the capture created the library on the server's side"
    );
    assert!(dir.path().join("served/images/v1.json").is_file());
    let packs = LocalStore::new(dir.path().join("served"))
        .list("packs/")
        .expect("list");
    assert!(!packs.is_empty(), "packs were uploaded");

    // And the served library is an ordinary library, readable directly.
    let out = dir.path().join("direct.img");
    ok(ferry(&dir.path().join("served"))
        .arg("restore")
        .arg("v1")
        .arg(&out));
    assert!(same_file(&img, &out));

    // Restore over HTTPS.
    let out = dir.path().join("out.img");
    let stats = json(
        ferry(url)
            .env("FERRY_CA", &ca)
            .arg("restore")
            .arg("v1")
            .arg(&out),
    );
    assert!(
        same_file(&img, &out),
        "restore over HTTPS is byte-identical"
    );
    assert!(stats["bytes_fetched"].as_u64().expect("bytes_fetched") > 0);
    assert!(
        stats["read_concurrency"]
            .as_u64()
            .expect("read_concurrency")
            >= 4
    );

    // Without the CA, or with another CA, the client refuses the server.
    let err = ferry_tests::fails(ferry(url).env_remove("FERRY_CA").args(["image", "ls"]));
    assert!(err.contains("FERRY_CA"), "{err}");
    let other = TestServer::start(Arc::new(LocalStore::new(dir.path())), "127.0.0.1:0", |r| r)
        .expect("other server");
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, &other.ca_pem).expect("ca");
    let err = ferry_tests::fails(ferry(url).env("FERRY_CA", &other_ca).args(["image", "ls"]));
    assert!(err.contains(&srv.url), "the error names the URL: {err}");
}

/// A fault injected by the test server's middleware.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// The first `n` requests get a 500.
    Errors500(usize),
    /// Every ranged GET's body has one byte changed (same length).
    FlipByte,
    /// Every ranged GET's body is cut short, with a consistent header.
    ShortBody,
}

fn faulty_server(dir: &Path, fault: Fault, count: Arc<AtomicUsize>) -> TestServer {
    TestServer::start(
        Arc::new(LocalStore::new(dir)),
        "127.0.0.1:0",
        move |r: Router| {
            r.layer(middleware::from_fn(move |req: Request, next: Next| {
                let count = count.clone();
                async move {
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    let ranged = req.headers().contains_key("range");
                    match fault {
                        Fault::Errors500(k) if n < k => {
                            return Response::builder()
                                .status(500)
                                .body(Body::from("injected"))
                                .expect("response");
                        }
                        _ => {}
                    }
                    let resp = next.run(req).await;
                    if !ranged || matches!(fault, Fault::Errors500(_)) {
                        return resp;
                    }
                    let (mut parts, body) = resp.into_parts();
                    let mut bytes = axum::body::to_bytes(body, usize::MAX)
                        .await
                        .expect("body")
                        .to_vec();
                    match fault {
                        Fault::FlipByte => {
                            let mid = bytes.len() / 2;
                            bytes[mid] ^= 0x55;
                        }
                        Fault::ShortBody => {
                            bytes.truncate(bytes.len() / 2);
                            parts.headers.insert("content-length", bytes.len().into());
                        }
                        Fault::Errors500(_) => {}
                    }
                    Response::from_parts(parts, Body::from(bytes))
                }
            }))
        },
    )
    .expect("faulty server")
}

/// An error with its causes, as the CLI prints it.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s += &format!(": {c}");
        src = c.source();
    }
    s
}

/// Every byte of `out` is either zero (never written) or the source's.
fn no_wrong_byte(src: &Path, out: &Path) {
    let (a, b) = (
        std::fs::read(src).expect("src"),
        std::fs::read(out).expect("out"),
    );
    assert!(b.len() <= a.len());
    let wrong = a.iter().zip(&b).filter(|(x, y)| **y != 0 && x != y).count();
    assert_eq!(wrong, 0, "{wrong} wrong bytes reached the target");
}

#[test]
fn a_misbehaving_server_costs_retries_or_a_clear_error_never_a_wrong_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("disk.img");
    write_disk_like(&img, 24, 11);
    let lib_dir = dir.path().join("lib");
    local_capture(&lib_dir, &img, "v1");

    // 500s, then success: retried.
    let count = Arc::new(AtomicUsize::new(0));
    let srv = faulty_server(&lib_dir, Fault::Errors500(3), count.clone());
    let lib = remote_library(&srv.url, &srv.ca_pem, 6);
    let out = dir.path().join("out-500.img");
    imaging::restore(&lib, "v1", &out, &RestoreOptions::default(), &NoProgress)
        .expect("restore succeeds after retries");
    assert!(same_file(&img, &out));
    assert!(count.load(Ordering::SeqCst) > 3);
    drop(srv);

    // Garbage chunk bytes: verification stops the restore, naming the chunk.
    let srv = faulty_server(&lib_dir, Fault::FlipByte, Arc::new(AtomicUsize::new(0)));
    let lib = remote_library(&srv.url, &srv.ca_pem, 2);
    let out = dir.path().join("out-flip.img");
    let err = imaging::restore(&lib, "v1", &out, &RestoreOptions::default(), &NoProgress)
        .expect_err("garbage is refused");
    let msg = chain(&err);
    assert!(msg.contains("chunk") && msg.contains(&srv.url), "{msg}");
    no_wrong_byte(&img, &out);
    drop(srv);

    // Short bodies: retried, then a clear error naming the URL and range.
    let srv = faulty_server(&lib_dir, Fault::ShortBody, Arc::new(AtomicUsize::new(0)));
    let lib = remote_library(&srv.url, &srv.ca_pem, 3);
    let out = dir.path().join("out-short.img");
    let err = imaging::restore(&lib, "v1", &out, &RestoreOptions::default(), &NoProgress)
        .expect_err("short answers are refused");
    let msg = chain(&err);
    assert!(
        msg.contains(&srv.url) && msg.contains("bytes") && msg.contains("3 attempts"),
        "{msg}"
    );
    no_wrong_byte(&img, &out);
}

#[test]
fn a_cut_restore_resumes_and_refetches_little() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("disk.img");
    // Incompressible, so stored ≈ image size and the refetch ratio means
    // something.
    std::fs::write(&img, ferry_tests::pseudo_random(160 << 20, 5)).expect("img");
    let lib_dir = dir.path().join("lib");
    local_capture(&lib_dir, &img, "v1");
    let stored: u64 = LocalStore::new(&lib_dir)
        .list("packs/")
        .expect("list")
        .iter()
        .map(|o| o.size)
        .sum();

    let served = Arc::new(AtomicU64::new(0));
    let counting = |served: Arc<AtomicU64>| {
        move |r: Router| {
            r.layer(middleware::from_fn(move |req: Request, next: Next| {
                let served = served.clone();
                async move {
                    let resp = next.run(req).await;
                    if let Some(n) = resp
                        .headers()
                        .get("content-range")
                        .and_then(|_| resp.headers().get("content-length"))
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    {
                        served.fetch_add(n, Ordering::SeqCst);
                    }
                    resp
                }
            }))
        }
    };
    let (ca, chain, key) = manager::library_http::test_certificates().expect("certs");
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(&lib_dir));
    let srv = TestServer::start_with(
        store.clone(),
        "127.0.0.1:0",
        &ca,
        &chain,
        &key,
        counting(served.clone()),
    )
    .expect("server");
    let (url, addr) = (srv.url.clone(), srv.addr);
    let out = dir.path().join("out.img");

    // Kill the server once about half the packs are served.
    let restore = {
        let (url, ca, out) = (url.clone(), ca.clone(), out.clone());
        std::thread::spawn(move || {
            let lib = remote_library(&url, &ca, 2);
            imaging::restore(&lib, "v1", &out, &RestoreOptions::default(), &NoProgress)
        })
    };
    let started = Instant::now();
    while served.load(Ordering::SeqCst) < stored / 2 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "restore stalled"
        );
        assert!(!restore.is_finished(), "restore ended before the cut");
        std::thread::sleep(Duration::from_millis(5));
    }
    srv.kill();
    let served_first = served.load(Ordering::SeqCst);
    let err = restore
        .join()
        .expect("restore thread")
        .expect_err("the cut fails the first restore");
    eprintln!("first restore, cut after {served_first} bytes served: {err}");

    // Restart on the same address with the same certificate; rerun.
    let srv = TestServer::start_with(store, &addr.to_string(), &ca, &chain, &key, |r| r)
        .expect("server restarts");
    let lib = remote_library(&srv.url, &ca, 6);
    let stats = imaging::restore(&lib, "v1", &out, &RestoreOptions::default(), &NoProgress)
        .expect("the rerun completes");
    assert!(same_file(&img, &out), "resumed restore is byte-identical");
    let refetched = (served_first + stats.bytes_fetched).saturating_sub(stored);
    eprintln!(
        "stored {stored}, served before the cut {served_first}, fetched by the rerun {}, \
         refetched {refetched} ({:.1} % of the image)",
        stats.bytes_fetched,
        refetched as f64 * 100.0 / stored as f64
    );
    assert!(stats.bytes_seeded > 0, "the rerun seeded from the first");
    // What was in flight at the cut (the queues: a few 4 MiB batches) is
    // all a rerun may fetch again.
    assert!(
        refetched <= (stored / 20).max(40 << 20),
        "refetched {refetched} of {stored}"
    );
}

/// moto's S3 server on a free port, or None (skipped loudly) without it.
fn moto() -> Option<(Child, u16)> {
    let Ok(path) = which("moto_server") else {
        eprintln!("SKIPPED: moto_server is not installed (pip install 'moto[server]')");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let child = Command::new(path)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting moto_server");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some((child, port))
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

/// Creates a bucket with one unsigned request (moto does not check
/// signatures).
fn create_bucket(port: u16, bucket: &str) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("response");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[test]
fn capture_and_restore_in_s3() {
    let Some((mut child, port)) = moto() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("disk.img");
    write_disk_like(&img, 24, 3);
    create_bucket(port, "ferry");
    let url = format!("s3://ferry/libs/one?endpoint=http://127.0.0.1:{port}&region=us-east-1");
    let with_creds = |c: &mut Command| {
        c.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing");
    };
    let mut cap = ferry(Path::new(&url));
    with_creds(&mut cap);
    ok(cap.arg("capture").arg(&img).args(["--name", "v1"]));
    let out = dir.path().join("out.img");
    let mut rest = ferry(Path::new(&url));
    with_creds(&mut rest);
    let stats = json(rest.arg("restore").arg("v1").arg(&out));
    let _ = child.kill();
    let _ = child.wait();
    assert!(same_file(&img, &out), "restore from S3 is byte-identical");
    assert!(stats["read_concurrency"].as_u64().expect("concurrency") >= 4);
}
