//! Serves a local library over HTTPS with manager's library routes and a
//! fresh test CA, without auth: for benchmarks (tests/bench/net.sh) and
//! manual tests, not production (`ferry serve` is that).
//!
//! Usage: library_server LIBRARY_DIR LISTEN_ADDR CA_OUT
//! Writes the CA PEM to CA_OUT, prints the library URL on stdout, and serves
//! until killed.

use std::sync::Arc;

use imaging::store::LocalStore;
use manager::library_http::TestServer;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, listen, ca_out] = args.as_slice() else {
        return Err("usage: library_server LIBRARY_DIR LISTEN_ADDR CA_OUT".into());
    };
    let srv = TestServer::start(Arc::new(LocalStore::new(dir)), listen, |r| r)?;
    std::fs::write(ca_out, &srv.ca_pem)?;
    println!("{}", srv.url);
    loop {
        std::thread::park();
    }
}
