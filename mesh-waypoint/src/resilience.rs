//! The resilience layers of the request path, each one decision with one job: deadlines
//! ([`timeout`]), whether and when to try again ([`retry`]), how many retries the host can take
//! ([`budget`]), injected faults ([`fault`]), replayable request bodies ([`replay`]) and
//! shadow copies ([`mirror`]).

pub mod budget;
pub mod fault;
pub mod mirror;
pub mod replay;
pub mod retry;
pub mod timeout;
