//! ferry's end-to-end tests as one test binary: each file in this directory
//! is a module here, so the harness and its large dependency graph are
//! linked once (see `autotests = false` in tests/Cargo.toml). Test names are
//! `<file>::<test>`:
//!
//! ```text
//! cargo test --release -p ferry-tests --test suite              all of them
//! cargo test --release -p ferry-tests --test suite adapt::      one file's
//! cargo test --release -p ferry-tests --test suite -- --list    their names
//! ```
//!
//! `./run test` runs one file's module per process, one after another, as
//! the separate binaries ran: tests of different files (each of which may
//! boot VMs, take loop devices or build a fixture) never overlap.
//!
//! A new test file is a new `mod` line below (kept in alphabetical order;
//! `./run test` reads the list from here).

mod adapt;
mod boot;
mod cli;
mod deploy;
mod drivers;
mod e2e;
mod firstboot;
mod manager;
mod netlib;
mod populate;
mod runner;
mod server;
mod survey;
mod swap;
mod tree;
