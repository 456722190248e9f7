//! The contract model of stoa-tap.
//!
//! This crate is pure: its input is an [`Exchange`] (one HTTP request and its
//! response as observed on the wire), its outputs are documents. It never
//! touches capture code, so inference can be tested with plain values and
//! reused by the control plane.
//!
//! ```text
//! Exchange ──observe──> Observations ──merge──> Observations
//!                            │
//!        model::build (templating decisions from the merged evidence)
//!                            │
//!        ┌──────────────┬────┴─────────┬──────────────┐
//!   openapi::emit    uac::emit    summary::endpoint_table   diff::diff
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
pub mod bundle;
pub mod config;
pub mod diff;
pub mod exchange;
pub mod model;
mod observations;
pub mod openapi;
mod operation;
mod path;
pub mod redact;
pub(crate) mod sample;
mod schema;
mod security;
pub mod shape;
pub mod stats;
pub mod summary;
#[cfg(test)]
mod tests;
pub mod uac;
mod util;
mod vocab;
pub mod yaml;

/// The histogram crate, for readers of [`stats::Histogram::hdr`] and of
/// the interval logs [`stats::write_interval_log`] writes.
pub use hdrhistogram;

pub use config::{
    HintError, InferenceConfig, Limits, RedactionConfig, TemplateHint, TemplatingConfig,
};
pub use exchange::{
    Anomalies, Body, Exchange, FlowId, Header, HttpVersion, Request, Response, Timing,
};
pub use observations::{
    CapCounters, Observations, ObservationsError, Tier, Totals, FORMAT_VERSION,
    LEARNED_RESPONSE_HEADERS, OLDEST_FORMAT_VERSION,
};
