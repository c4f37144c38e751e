//! The waypoint: its L7 decisions, pure functions of one model and one request (no I/O) — route
//! tables built once per model ([`table`]), the route decision ([`route`]), a backend's
//! endpoints ([`endpoints`]), JWT authentication ([`jwt`]), L7 authorization ([`authz`]), protocol detection ([`detect`]),
//! forwarding headers ([`headers`]) and the proxy's error type ([`error`]) — and its data path:
//! flags ([`config`]), the model ([`state`]), HBONE in ([`inbound`]), HTTP ([`proxy`]) and opaque
//! TCP ([`tcp`]) handling, upstream connections ([`upstream`]), distributed tracing ([`trace`]),
//! metrics and the status port.
#![forbid(unsafe_code)]

pub mod authz;
pub mod balance;
pub mod config;
pub mod detect;
pub mod endpoints;
pub mod error;
pub mod headers;
pub mod hosts;
pub mod inbound;
pub mod io;
pub mod istio_request;
pub mod jwks_fetch;
pub mod jwt;
pub mod l4;
pub mod metrics;
pub mod pool_limits;
pub mod proxy;
pub mod request_log;
pub mod resilience;
pub mod route;
pub mod rules;
pub mod serving;
pub mod sni;
pub mod state;
pub mod status;
pub mod table;
pub mod tcp;
pub mod trace;
pub mod upstream;

#[cfg(test)]
mod testdata;

pub use authz::{AuthzDecision, Verdict};
pub use detect::{mode, sniff, Mode, Sniff};
pub use endpoints::{pick, Upstream};
pub use error::{Blame, ProxyError};
pub use jwt::{Authn, Jwt};
pub use route::{Backend, Decision, Forward, RequestView};
pub use rules::{HeaderMutation, Warning};
pub use table::{RouteTable, ServiceKey, SourceInfo, Target};
