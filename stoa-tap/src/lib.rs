//! stoa-tap: a read-only observer of HTTP/1.x API traffic.
//!
//! Data flows through the modules in this order:
//! [`source`] (capture files) -> [`decode`] (link, network and tunnel layers)
//! -> [`tcp`] (flow table and reassembly) -> [`http1`] (exchanges)
//! -> [`pipeline`] (drives the stages and gathers counters) -> the CLI outputs.
#![forbid(unsafe_code)]

pub mod daemon;
pub mod decode;
pub mod flow;
pub mod http1;
pub mod metrics;
pub mod pipeline;
pub mod publish;
pub mod server;
pub mod source;
pub mod summary;
pub mod tcp;
pub mod view;
