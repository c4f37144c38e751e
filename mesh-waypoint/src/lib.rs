//! The waypoint's L7 decisions, pure functions of one model and one request (no I/O): route
//! tables built once per model ([`table`]), the route decision ([`route`]), a backend's
//! endpoints ([`endpoints`]), L7 authorization ([`authz`]), protocol detection ([`detect`]),
//! forwarding headers ([`headers`]) and the proxy's error type ([`error`]).
#![forbid(unsafe_code)]

pub mod authz;
pub mod detect;
pub mod endpoints;
pub mod error;
pub mod headers;
pub mod hosts;
pub mod route;
pub mod rules;
pub mod table;

#[cfg(test)]
mod testdata;

pub use authz::{AuthzDecision, Verdict};
pub use detect::{mode, sniff, Mode, Sniff};
pub use endpoints::{pick, Upstream};
pub use error::{Blame, ProxyError};
pub use route::{Backend, Decision, Forward, RequestView};
pub use rules::{HeaderMutation, Warning};
pub use table::{RouteTable, ServiceKey, SourceInfo, Target};
