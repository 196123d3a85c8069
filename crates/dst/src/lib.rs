//! A deterministic simulation of the whole pipeline, for `cargo test`.
//!
//! The example-based suites drive the real binary against the real broker,
//! but they reach only the interleavings their timing happens to produce.
//! This crate searches interleavings instead: one seed gives one schedule
//! (the directory, the limits, the workers, the runs, and every choice of
//! what happens next), so a failure prints its seed and the end of its
//! trace, and re-running that seed reproduces it exactly.
//!
//! - The **workers** are the product's own pure parts: the fetcher's
//!   `FetchPage::answer` over the Graph client's request builder and
//!   decoder; the mapper's `mapper::map`; the uploader's state machine
//!   (`xaas_core::upload`), driven as its real driver drives it.
//! - The **broker** (`broker`) is at least once: unacked deliveries come
//!   back after a crash, publishes can be duplicated, the batches queue has
//!   a single active consumer that fails over, and a consumer can lose its
//!   connection while its handler runs on.
//! - **Graph** and **Okta** are the sandbox's own rules (`xaas_sim`'s
//!   `graph::respond` and `okta::handle`), on a virtual clock, with the
//!   directory changing between any two reads and Okta failing before it
//!   acts or losing its answer after.
//! - The **invariants** (`invariants`) are checked after every step and at
//!   the end of every run.

mod broker;
mod invariants;
mod rng;
mod scenario;
mod world;

pub use scenario::{Faults, HarnessSabotage, Scenario};
pub use world::{RUN_DEADLINE, Summary, Violation, run, run_traced};
