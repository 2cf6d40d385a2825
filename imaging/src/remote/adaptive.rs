//! An adaptive concurrency limit for range reads from a network store.
//!
//! A fixed number of requests in flight caps throughput at
//! `N × request size / RTT` (desync's limit): too few on a long fat link,
//! needlessly many on loopback. [`Limiter`] adjusts the limit by the
//! throughput gradient: every measuring window (at least [`WINDOW`] and
//! `limit` completed reads) it compares the window's rate with the previous
//! one's; while raising the limit raises the rate by at least
//! [`GAIN`], it keeps raising it (by a quarter, at least one); when the rate
//! falls by more than [`LOSS`] after a raise, it steps back; a failed read
//! halves the limit (multiplicative decrease). It starts at
//! [`START`] and stays within `1..=max`.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Requests in flight at the start.
pub const START: usize = 4;
/// The shortest measuring window.
pub const WINDOW: Duration = Duration::from_millis(250);
/// The relative rate rise that justifies another raise.
pub const GAIN: f64 = 0.05;
/// The relative rate fall that undoes a raise.
pub const LOSS: f64 = 0.15;

struct State {
    limit: usize,
    in_flight: usize,
    peak: usize,
    window_start: Instant,
    window_bytes: u64,
    window_reads: usize,
    last_rate: f64,
    raised_from: Option<usize>,
}

/// The limit and its bookkeeping, shared by the fetch threads.
pub(crate) struct Limiter {
    max: usize,
    state: Mutex<State>,
    cv: Condvar,
}

impl Limiter {
    /// A limit starting at [`START`] (or `max` if lower), never above `max`.
    pub(crate) fn new(max: usize) -> Limiter {
        let max = max.max(1);
        let limit = START.min(max);
        Limiter {
            max,
            state: Mutex::new(State {
                limit,
                in_flight: 0,
                peak: limit,
                window_start: Instant::now(),
                window_bytes: 0,
                window_reads: 0,
                last_rate: 0.0,
                raised_from: None,
            }),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a place among the requests in flight.
    pub(crate) fn acquire(&self) {
        let mut s = self.lock();
        while s.in_flight >= s.limit {
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.in_flight += 1;
    }

    /// Gives the place back unused (nothing was read).
    pub(crate) fn cancel(&self) {
        let mut s = self.lock();
        s.in_flight -= 1;
        self.cv.notify_all();
    }

    /// Gives the place back, reporting `bytes` read (`ok` false on failure).
    pub(crate) fn release(&self, bytes: u64, ok: bool) {
        let mut s = self.lock();
        s.in_flight -= 1;
        if !ok {
            s.limit = (s.limit / 2).max(1);
            s.raised_from = None;
            s.last_rate = 0.0;
            s.window_start = Instant::now();
            s.window_bytes = 0;
            s.window_reads = 0;
        } else {
            s.window_bytes += bytes;
            s.window_reads += 1;
            let elapsed = s.window_start.elapsed();
            if elapsed >= WINDOW && s.window_reads >= s.limit {
                let rate = s.window_bytes as f64 / elapsed.as_secs_f64();
                self.adjust(&mut s, rate);
                s.window_start = Instant::now();
                s.window_bytes = 0;
                s.window_reads = 0;
            }
        }
        self.cv.notify_all();
    }

    fn adjust(&self, s: &mut State, rate: f64) {
        let last = s.last_rate;
        match s.raised_from {
            Some(before) if rate < last * (1.0 - LOSS) => {
                // The raise hurt: go back and stay.
                s.limit = before;
                s.raised_from = None;
            }
            Some(_) if rate < last * (1.0 + GAIN) => {
                // Flat: the link (or the CPU) is the bottleneck; hold.
                s.raised_from = None;
            }
            _ if s.limit < self.max && (s.raised_from.is_some() || last == 0.0) => {
                let before = s.limit;
                s.limit = (s.limit + (s.limit / 4).max(1)).min(self.max);
                s.raised_from = Some(before);
            }
            _ => {
                // Holding: probe upwards again if the rate rose on its own.
                if rate > last * (1.0 + GAIN) && s.limit < self.max {
                    let before = s.limit;
                    s.limit = (s.limit + 1).min(self.max);
                    s.raised_from = Some(before);
                }
            }
        }
        s.last_rate = rate;
        s.peak = s.peak.max(s.limit);
    }

    /// The highest limit reached.
    pub(crate) fn peak(&self) -> usize {
        self.lock().peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_while_rate_grows_and_halves_on_failure() {
        let l = Limiter::new(64);
        let mut s = l.lock();
        // Each raise brings 30 % more: keep raising.
        let mut rate = 100.0;
        for _ in 0..5 {
            l.adjust(&mut s, rate);
            rate *= 1.3;
        }
        assert!(s.limit > START, "{}", s.limit);
        let grown = s.limit;
        // Flat (the last window's rate again): hold.
        let last = rate / 1.3;
        l.adjust(&mut s, last);
        l.adjust(&mut s, last);
        assert_eq!(s.limit, grown);
        drop(s);
        l.acquire();
        l.release(0, false);
        assert_eq!(l.lock().limit, grown / 2);
        assert!(l.peak() >= grown);
    }

    #[test]
    fn a_raise_that_hurts_is_undone() {
        let l = Limiter::new(64);
        let mut s = l.lock();
        l.adjust(&mut s, 100.0); // first window: raise 4 → 5
        assert_eq!(s.limit, 5);
        l.adjust(&mut s, 50.0); // fell: back to 4
        assert_eq!(s.limit, 4);
    }

    #[test]
    fn never_above_max() {
        let l = Limiter::new(6);
        let mut s = l.lock();
        let mut rate = 1.0;
        for _ in 0..20 {
            l.adjust(&mut s, rate);
            rate *= 2.0;
        }
        assert_eq!(s.limit, 6);
    }
}
