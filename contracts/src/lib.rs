//! The contract model of stoa-tap.
//!
//! This crate is pure: its input is an [`Exchange`] (one HTTP request and its
//! response as observed on the wire), its outputs are documents. It never
//! touches capture code, so inference can be tested with plain values and
//! reused by the control plane.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod exchange;

pub use exchange::{
    Anomalies, Body, Exchange, FlowId, Header, HttpVersion, Request, Response, Timing,
};
