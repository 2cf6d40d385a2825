//! `ferry-link`: a packet-level link emulator between two network
//! namespaces, for kernels without `sch_netem` (tests/bench/net.sh, issue 7).
//!
//! ```text
//! ferry-link --ns-a NS1 --dev-a fl-a --ns-b NS2 --dev-b fl-b \
//!            --rate 100mbit --delay 25ms [--limit 1000]
//! ```
//!
//! It makes one TUN device (`IFF_TUN | IFF_NO_PI`, raw IP packets) in each
//! namespace (`/var/run/netns/NAME`, as `ip netns add` makes them), prints
//! `ready` on stdout once both exist, and forwards IP packets between them
//! until SIGTERM or SIGINT; then it prints each direction's counters on
//! stderr (SIGUSR2 prints them so far and goes on). The caller gives the devices their addresses and brings them up.
//!
//! Each direction is modelled as netem `delay D rate R limit L` on a veth
//! would: a FIFO whose packets are serialized at R, counting each packet's
//! IP length plus a 14-byte Ethernet header (what netem counts on a veth),
//! then delayed by D; a packet arriving while L packets are inside
//! (queued, on the wire or in flight) is dropped (drop-tail). Delivery times
//! come from the model, not from how promptly this process runs: a late
//! wake-up delays a packet, but never lowers the rate. The forwarding
//! threads ask for SCHED_FIFO (they sleep nearly all the time), so that a
//! busy machine (a build, a restore's decompression) does not add
//! scheduling delay to the link's; without the privilege they run as
//! ordinary threads and say so. Limits: no jitter,
//! loss, reordering or duplication; packets are at most the TUN device's
//! MTU (no GSO).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, clock_nanosleep, ClockId, ClockNanosleepFlags};
use nix::unistd::getpid;

const USAGE: &str = "usage: ferry-link --ns-a NS --dev-a DEV --ns-b NS --dev-b DEV \
                     --rate RATE (e.g. 100mbit) --delay DELAY (e.g. 25ms) [--limit PACKETS]";

/// What netem counts per packet on a veth beyond the IP packet: the
/// Ethernet header (no preamble, FCS or inter-frame gap).
const ETHERNET_HEADER: u64 = 14;
/// netem's default `limit`.
const DEFAULT_LIMIT: usize = 1000;
/// The largest packet a TUN device hands over (its MTU is at most 64 KiB).
const MAX_PACKET: usize = 65536;
/// Timer slack for the delivering threads: the default 50 µs is 40 % of a
/// full-size packet's serialization time at 100 Mbit/s.
const TIMER_SLACK_NS: libc::c_ulong = 1_000;
/// The forwarding threads' SCHED_FIFO priority: above every ordinary
/// thread, below the kernel's own real-time threads (priority 50 and up).
const RT_PRIORITY: libc::c_int = 10;

struct Args {
    ns_a: String,
    dev_a: String,
    ns_b: String,
    dev_b: String,
    /// Bits per second.
    rate: u64,
    /// One-way propagation delay, nanoseconds.
    delay_ns: u64,
    limit: usize,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args> {
    let (mut ns_a, mut dev_a, mut ns_b, mut dev_b) = (None, None, None, None);
    let (mut rate, mut delay_ns, mut limit) = (None, None, DEFAULT_LIMIT);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--ns-a" => ns_a = Some(value),
            "--dev-a" => dev_a = Some(value),
            "--ns-b" => ns_b = Some(value),
            "--dev-b" => dev_b = Some(value),
            "--rate" => rate = Some(parse_rate(&value)?),
            "--delay" => delay_ns = Some(parse_delay(&value)?),
            "--limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|&l| l > 0)
                    .with_context(|| format!("--limit {value}: not a packet count >= 1"))?
            }
            _ => bail!("unknown argument {flag}\n{USAGE}"),
        }
    }
    let need =
        |v: Option<String>, flag: &str| v.with_context(|| format!("{flag} missing\n{USAGE}"));
    Ok(Args {
        ns_a: need(ns_a, "--ns-a")?,
        dev_a: need(dev_a, "--dev-a")?,
        ns_b: need(ns_b, "--ns-b")?,
        dev_b: need(dev_b, "--dev-b")?,
        rate: rate.with_context(|| format!("--rate missing\n{USAGE}"))?,
        delay_ns: delay_ns.with_context(|| format!("--delay missing\n{USAGE}"))?,
        limit,
    })
}

/// Splits `100mbit` into (100.0, "mbit").
fn number_and_unit(s: &str) -> Option<(f64, &str)> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    Some((s[..end].parse().ok()?, &s[end..]))
}

/// A rate as tc writes it (`bit`, `kbit`, `mbit`, `gbit`; `bps`, `kbps`,
/// `mbps`, `gbps` are bytes per second; SI multiples), in bits per second.
fn parse_rate(s: &str) -> Result<u64> {
    let (n, unit) = number_and_unit(s).with_context(|| format!("rate {s}: no number"))?;
    let bits = match unit.to_ascii_lowercase().as_str() {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        _ => bail!("rate {s}: unit must be bit, kbit, mbit, gbit, bps, kbps, mbps or gbps"),
    };
    let rate = (n * bits).round();
    if !(1.0..u64::MAX as f64).contains(&rate) {
        bail!("rate {s}: out of range");
    }
    Ok(rate as u64)
}

/// A delay (`us`, `ms` or `s`), in nanoseconds.
fn parse_delay(s: &str) -> Result<u64> {
    let (n, unit) = number_and_unit(s).with_context(|| format!("delay {s}: no number"))?;
    let ns = match unit {
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => bail!("delay {s}: unit must be us, ms or s"),
    };
    let delay = (n * ns).round();
    if !(0.0..3600e9).contains(&delay) {
        bail!("delay {s}: out of range");
    }
    Ok(delay as u64)
}

/// What happens to an offered packet.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Written out at this time (monotonic clock, nanoseconds).
    Deliver(u64),
    /// The link already holds `limit` packets.
    Drop,
}

/// The timing model of one direction: serialization at `rate`, FIFO,
/// then `delay`; drop-tail at `limit` packets inside.
struct Link {
    rate: u64,
    delay_ns: u64,
    limit: usize,
    /// When the last accepted packet's last bit leaves the sender.
    free_at: u64,
    /// Delivery times of the packets inside, oldest first.
    inside: VecDeque<u64>,
}

impl Link {
    fn new(rate: u64, delay_ns: u64, limit: usize) -> Link {
        Link {
            rate,
            delay_ns,
            limit,
            free_at: 0,
            inside: VecDeque::with_capacity(limit),
        }
    }

    /// Offers a `len`-byte IP packet at `now`.
    fn offer(&mut self, now: u64, len: usize) -> Verdict {
        while self.inside.front().is_some_and(|&at| at <= now) {
            self.inside.pop_front();
        }
        if self.inside.len() >= self.limit {
            return Verdict::Drop;
        }
        let bits = (len as u128 + u128::from(ETHERNET_HEADER)) * 8;
        let serialize = (bits * 1_000_000_000 / u128::from(self.rate)) as u64;
        self.free_at = self.free_at.max(now) + serialize;
        let at = self.free_at + self.delay_ns;
        self.inside.push_back(at);
        Verdict::Deliver(at)
    }

    /// Packets inside at the last offer.
    fn queued(&self) -> usize {
        self.inside.len()
    }
}

/// One direction's counters.
#[derive(Default)]
struct Counters {
    forwarded_packets: AtomicU64,
    forwarded_bytes: AtomicU64,
    dropped_packets: AtomicU64,
    dropped_bytes: AtomicU64,
    write_errors: AtomicU64,
    peak_inside: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn report(&self, name: &str, limit: usize) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{name}: forwarded {} packets {} bytes, dropped {} packets {} bytes (limit {limit}), \
             peak {} packets inside, {} write errors",
            get(&self.forwarded_packets),
            get(&self.forwarded_bytes),
            get(&self.dropped_packets),
            get(&self.dropped_bytes),
            get(&self.peak_inside),
            get(&self.write_errors),
        )
    }
}

fn now_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always readable");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

fn sleep_until(at: u64) {
    let ts = TimeSpec::new(
        (at / 1_000_000_000) as libc::time_t,
        (at % 1_000_000_000) as libc::c_long,
    );
    // Only a signal ends it early (and those are blocked): sleep again.
    while let Err(Errno::EINTR) = clock_nanosleep(
        ClockId::CLOCK_MONOTONIC,
        ClockNanosleepFlags::TIMER_ABSTIME,
        &ts,
    ) {}
}

/// Makes the calling thread SCHED_FIFO at [`RT_PRIORITY`]; says so on
/// stderr (once) if it may not.
fn set_realtime() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    let param = libc::sched_param {
        sched_priority: RT_PRIORITY,
    };
    // SAFETY: sets the calling thread's policy from a valid sched_param.
    let r = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if r != 0 {
        WARNED.call_once(|| {
            eprintln!(
                "ferry-link: SCHED_FIFO refused ({}): forwarding at normal priority, \
                 so a busy CPU adds delay",
                std::io::Error::from_raw_os_error(r)
            )
        });
    }
}

/// Creates TUN device `dev` in namespace `ns` (on a thread of its own, which
/// enters the namespace: the device belongs to the namespace its
/// `/dev/net/tun` was opened in).
fn open_tun(ns: &str, dev: &str) -> Result<File> {
    if dev.is_empty() || dev.len() >= libc::IFNAMSIZ {
        bail!(
            "device name {dev:?}: must be 1 to {} bytes",
            libc::IFNAMSIZ - 1
        );
    }
    let (ns, dev) = (ns.to_owned(), dev.to_owned());
    thread::spawn(move || -> Result<File> {
        let path = format!("/var/run/netns/{ns}");
        let nsfile = File::open(&path)
            .with_context(|| format!("opening namespace {ns} ({path}; made by `ip netns add`?)"))?;
        setns(&nsfile, CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering network namespace {ns}"))?;
        let tun = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .with_context(|| format!("opening /dev/net/tun for {dev} in namespace {ns}"))?;
        // SAFETY: ifreq is plain data; all zeroes is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(dev.bytes()) {
            *d = s as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is, and
        // the descriptor is open for the call's length.
        let r = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if r < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("creating TUN device {dev} in namespace {ns}"));
        }
        Ok(tun)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread creating the TUN device panicked"))?
}

/// The first fatal error of a forwarding thread, for main to report.
type Failure = Arc<Mutex<Option<String>>>;

fn fail(failure: &Failure, msg: String) {
    let mut f = failure.lock().unwrap_or_else(|e| e.into_inner());
    f.get_or_insert(msg);
    drop(f);
    // Process-directed, so main's sigwait takes it.
    let _ = kill(getpid(), Signal::SIGUSR1);
}

/// Forwards packets read from `from` to `to` through a [`Link`]: a reader
/// thread timestamps and admits them, a delivering thread writes each at
/// its delivery time.
fn forward(
    name: String,
    mut from: File,
    mut to: File,
    mut link: Link,
    counters: Arc<Counters>,
    failure: Failure,
) {
    let (tx, rx) = mpsc::channel::<(u64, Vec<u8>)>();
    let deliver = {
        let (name, counters) = (name.clone(), Arc::clone(&counters));
        move || {
            set_realtime();
            if let Err(e) = nix::sys::prctl::set_timerslack(TIMER_SLACK_NS) {
                eprintln!(
                    "ferry-link: {name}: setting the timer slack: {e} (delivery less precise)"
                );
            }
            for (at, packet) in rx {
                sleep_until(at);
                // A TUN write takes the whole packet or fails.
                let failure = match to.write(&packet) {
                    Ok(n) if n == packet.len() => {
                        Counters::add(&counters.forwarded_packets, 1);
                        Counters::add(&counters.forwarded_bytes, n as u64);
                        continue;
                    }
                    Ok(n) => format!("{n} of {} bytes written", packet.len()),
                    Err(e) => e.to_string(),
                };
                // E.g. the device is down: the packet is lost.
                if counters.write_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!(
                        "ferry-link: {name}: writing a packet: {failure} (counting further errors)"
                    );
                }
            }
        }
    };
    thread::spawn(deliver);
    thread::spawn(move || {
        set_realtime();
        let mut buf = vec![0u8; MAX_PACKET];
        loop {
            let n = match from.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return fail(&failure, format!("{name}: reading a packet: {e}")),
            };
            match link.offer(now_ns(), n) {
                Verdict::Deliver(at) => {
                    counters
                        .peak_inside
                        .fetch_max(link.queued() as u64, Ordering::Relaxed);
                    if tx.send((at, buf[..n].to_vec())).is_err() {
                        return fail(&failure, format!("{name}: the delivering thread ended"));
                    }
                }
                Verdict::Drop => {
                    Counters::add(&counters.dropped_packets, 1);
                    Counters::add(&counters.dropped_bytes, n as u64);
                }
            }
        }
    });
}

fn run() -> Result<()> {
    if std::env::args().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let args = parse_args(std::env::args().skip(1))?;
    // Blocked before any thread starts, so that every thread inherits the
    // mask and only main's sigwait takes them.
    let signals: SigSet = [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ]
    .into_iter()
    .collect();
    signals.thread_block().context("blocking SIGINT/SIGTERM")?;

    let tun_a = open_tun(&args.ns_a, &args.dev_a)?;
    let tun_b = open_tun(&args.ns_b, &args.dev_b)?;
    let dup = |f: &File, dev: &str| {
        f.try_clone()
            .with_context(|| format!("duplicating {dev}'s descriptor"))
    };
    let a_to_b = format!(
        "{}/{} -> {}/{}",
        args.ns_a, args.dev_a, args.ns_b, args.dev_b
    );
    let b_to_a = format!(
        "{}/{} -> {}/{}",
        args.ns_b, args.dev_b, args.ns_a, args.dev_a
    );
    let (ab, ba) = (Arc::new(Counters::default()), Arc::new(Counters::default()));
    let failure = Failure::default();
    let link = || Link::new(args.rate, args.delay_ns, args.limit);
    forward(
        a_to_b.clone(),
        dup(&tun_a, &args.dev_a)?,
        dup(&tun_b, &args.dev_b)?,
        link(),
        Arc::clone(&ab),
        Arc::clone(&failure),
    );
    forward(
        b_to_a.clone(),
        tun_b,
        tun_a,
        link(),
        Arc::clone(&ba),
        Arc::clone(&failure),
    );
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")
        .and_then(|()| out.flush())
        .context("writing `ready` to stdout")?;
    drop(out);

    let signal = loop {
        let signal = signals.wait().context("waiting for SIGINT/SIGTERM")?;
        let so_far = if signal == Signal::SIGUSR2 {
            " so far"
        } else {
            ""
        };
        eprintln!("ferry-link{so_far}: {}", ab.report(&a_to_b, args.limit));
        eprintln!("ferry-link{so_far}: {}", ba.report(&b_to_a, args.limit));
        if signal != Signal::SIGUSR2 {
            break signal;
        }
    };
    if signal == Signal::SIGUSR1 {
        let f = failure.lock().unwrap_or_else(|e| e.into_inner());
        bail!("{}", f.as_deref().unwrap_or("a forwarding thread failed"));
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-link: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn back_to_back_packets_leave_one_serialization_apart() {
        // 100 Mbit/s: a 1500-byte IP packet is 1514 bytes on the wire, 121.12 µs.
        let mut l = Link::new(100_000_000, 25 * MS, 1000);
        let t0 = 1_000 * MS;
        assert_eq!(l.offer(t0, 1500), Verdict::Deliver(t0 + 121_120 + 25 * MS));
        assert_eq!(
            l.offer(t0, 1500),
            Verdict::Deliver(t0 + 2 * 121_120 + 25 * MS)
        );
        // Arriving while the second is still serializing: queued behind it.
        assert_eq!(
            l.offer(t0 + 100_000, 86),
            Verdict::Deliver(t0 + 2 * 121_120 + 8_000 + 25 * MS)
        );
        // After the link went idle: its own serialization and the delay only.
        let t1 = t0 + 10 * MS;
        assert_eq!(l.offer(t1, 1500), Verdict::Deliver(t1 + 121_120 + 25 * MS));
    }

    #[test]
    fn drops_at_the_limit_until_a_packet_is_delivered() {
        let mut l = Link::new(100_000_000, 25 * MS, 3);
        let t0 = 0;
        let delivered: Vec<_> = (0..3).map(|_| l.offer(t0, 1500)).collect();
        assert_eq!(l.offer(t0, 1500), Verdict::Drop);
        assert_eq!(l.offer(t0 + 25 * MS, 64), Verdict::Drop);
        // Once the first is out, there is room for one more.
        let Verdict::Deliver(first) = delivered[0] else {
            panic!("the first packet was dropped");
        };
        assert!(matches!(l.offer(first, 1500), Verdict::Deliver(_)));
        assert_eq!(l.offer(first, 1500), Verdict::Drop);
        assert_eq!(l.queued(), 3);
    }

    #[test]
    fn rates_and_delays_parse_as_tc_writes_them() {
        assert_eq!(parse_rate("100mbit").ok(), Some(100_000_000));
        assert_eq!(parse_rate("1.5gbit").ok(), Some(1_500_000_000));
        assert_eq!(parse_rate("10mbps").ok(), Some(80_000_000));
        assert!(parse_rate("100").is_err());
        assert!(parse_rate("mbit").is_err());
        assert_eq!(parse_delay("25ms").ok(), Some(25 * MS));
        assert_eq!(parse_delay("250us").ok(), Some(250_000));
        assert!(parse_delay("25").is_err());
    }
}
