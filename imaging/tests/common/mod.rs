//! Helpers shared by the integration tests of this directory.

/// `len` deterministic pseudo-random bytes (xorshift64) from seed `x`
/// (not 0).
pub fn xorshift(len: usize, mut x: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Captures disk image `src` into `lib` as image `name` (raw, two workers).
#[allow(dead_code)] // not every test file captures raw images
pub fn capture_raw(
    lib: &imaging::Library,
    src: &std::path::Path,
    name: &str,
    parent: Option<&str>,
) -> imaging::Manifest {
    let req = imaging::CaptureRequest {
        mode: imaging::DiskMode::Raw,
        name: name.into(),
        parent: parent.map(str::to_string),
        sources: vec![src.to_path_buf()],
        workers: 2,
    };
    imaging::capture(lib, &req, &imaging::NoProgress).expect("capture")
}
