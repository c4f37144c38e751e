//! Readiness (`GET /healthz/ready`, on `--readiness-addr` and on admin): the agent is ready once
//!
//! 1. its kernel programs are loaded;
//! 2. its configuration is in place: the local model file was loaded (`--local-config`), or the
//!    first model from the controller was applied (`--controller-addr` without a file; a
//!    controller model always has a version, the empty start-up model has none); an agent with
//!    neither runs its empty model by choice and has nothing to wait for;
//! 3. when a certificate service is configured (`--ca-addr`), every captured pod has a valid
//!    workload certificate (so its HBONE server presents one and its peers are not refused). With
//!    no captured pod nothing needs a certificate and the certificate service is not probed.
//!
//! Otherwise the answer is 503 with every missing condition listed in the body. The conditions
//! are evaluated at each request (a certificate that expires makes the agent not ready again).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper::StatusCode;
use mesh_common::http_server::{self, HttpResponse};
use mesh_common::identity::Identity;

use crate::registry::Registry;
use crate::state::State;
use crate::tunnel::Tunnel;

/// How long a readiness check waits for the pod registry (held during an enrolment) before it
/// answers not ready.
const REGISTRY_WAIT: Duration = Duration::from_secs(1);

/// Where the agent's configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A model file, loaded before the listeners start.
    LocalFile,
    /// The controller's config stream at this address.
    Controller(String),
    /// Neither: the agent runs an empty model.
    None,
}

/// What readiness depends on, gathered at one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Whether the kernel programs are loaded.
    pub programs_loaded: bool,
    /// Where the configuration comes from.
    pub source: ConfigSource,
    /// Version of the model in place (empty: the start-up model).
    pub model_version: String,
    /// The enrolled pods as far as readiness is concerned.
    pub pods: PodFacts,
}

/// The pods' side of readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodFacts {
    /// The registry does not exist yet (the programs are still loading).
    NotStarted,
    /// The registry was held for longer than [`REGISTRY_WAIT`] (an enrolment in progress).
    Busy,
    /// Captured pods that need a certificate and have none (`uid (identity)`), empty when none.
    WithoutCertificate(Vec<String>),
}

/// Every condition that keeps the agent from being ready (none: ready).
pub fn reasons(facts: &Facts) -> Vec<String> {
    let mut reasons = Vec::new();
    if !facts.programs_loaded {
        reasons.push("kernel programs not loaded".to_owned());
    }
    if let ConfigSource::Controller(addr) = &facts.source {
        if facts.model_version.is_empty() {
            reasons.push(format!(
                "no model applied from the controller at {addr} yet"
            ));
        }
    }
    match &facts.pods {
        PodFacts::NotStarted => reasons.push("pod registry not started".to_owned()),
        PodFacts::Busy => reasons.push(format!(
            "pod registry busy for over {REGISTRY_WAIT:?} (an enrolment is in progress)"
        )),
        PodFacts::WithoutCertificate(pods) => {
            for pod in pods {
                reasons.push(format!("pod {pod} has no valid workload certificate yet"));
            }
        }
    }
    reasons
}

/// The HTTP answer for `reasons`.
pub fn response(reasons: &[String]) -> HttpResponse {
    if reasons.is_empty() {
        return http_server::text(StatusCode::OK, "ready\n");
    }
    let mut body = String::from("not ready:\n");
    for reason in reasons {
        body.push_str("- ");
        body.push_str(reason);
        body.push('\n');
    }
    http_server::text(StatusCode::SERVICE_UNAVAILABLE, body)
}

/// The agent's readiness, filled in as start-up goes.
#[derive(Debug)]
pub struct Readiness {
    source: ConfigSource,
    state: Arc<State>,
    programs_loaded: AtomicBool,
    pods: OnceLock<(Arc<Registry>, Option<Arc<Tunnel>>)>,
}

impl Readiness {
    /// Readiness of an agent whose model is `state`, configured from `source`.
    pub fn new(source: ConfigSource, state: Arc<State>) -> Readiness {
        Readiness {
            source,
            state,
            programs_loaded: AtomicBool::new(false),
            pods: OnceLock::new(),
        }
    }

    /// The kernel programs are loaded.
    pub fn set_programs_loaded(&self) {
        self.programs_loaded.store(true, Ordering::Release);
    }

    /// The pod registry exists (with the tunnel whose certificates the pods need, if any).
    pub fn set_registry(&self, registry: Arc<Registry>, tunnel: Option<Arc<Tunnel>>) {
        let _ = self.pods.set((registry, tunnel));
    }

    /// The facts now.
    pub async fn facts(&self) -> Facts {
        Facts {
            programs_loaded: self.programs_loaded.load(Ordering::Acquire),
            source: self.source.clone(),
            model_version: self.state.snapshot().version.clone(),
            pods: self.pod_facts().await,
        }
    }

    async fn pod_facts(&self) -> PodFacts {
        let Some((registry, tunnel)) = self.pods.get() else {
            return PodFacts::NotStarted;
        };
        let Ok(pods) = tokio::time::timeout(REGISTRY_WAIT, registry.list()).await else {
            return PodFacts::Busy;
        };
        let Some(tunnel) = tunnel else {
            // Plaintext only: no pod needs a certificate.
            return PodFacts::WithoutCertificate(Vec::new());
        };
        let missing = pods
            .iter()
            .filter(|pod| pod.captured)
            .filter(|pod| match pod.identity.parse::<Identity>() {
                Ok(identity) => tunnel.certs.current(&identity).is_none(),
                // Cannot happen for an identity the registry built; counted as missing.
                Err(_) => true,
            })
            .map(|pod| format!("{} ({})", pod.uid, pod.identity))
            .collect();
        PodFacts::WithoutCertificate(missing)
    }

    /// The answer to `GET /healthz/ready`.
    pub async fn respond(&self) -> HttpResponse {
        response(&reasons(&self.facts().await))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(programs: bool, source: ConfigSource, version: &str, pods: PodFacts) -> Facts {
        Facts {
            programs_loaded: programs,
            source,
            model_version: version.to_owned(),
            pods,
        }
    }

    #[test]
    fn ready_only_when_every_condition_holds() {
        let controller = || ConfigSource::Controller("http://198.18.0.254:15010".into());
        let none = || PodFacts::WithoutCertificate(Vec::new());
        let cases: Vec<(Facts, Vec<&str>)> = vec![
            (facts(true, controller(), "v1", none()), vec![]),
            (facts(true, ConfigSource::LocalFile, "", none()), vec![]),
            (facts(true, ConfigSource::None, "", none()), vec![]),
            (
                facts(false, controller(), "", PodFacts::NotStarted),
                vec![
                    "kernel programs not loaded",
                    "no model applied from the controller at http://198.18.0.254:15010 yet",
                    "pod registry not started",
                ],
            ),
            (
                facts(true, controller(), "", none()),
                vec!["no model applied from the controller at http://198.18.0.254:15010 yet"],
            ),
            (
                facts(true, ConfigSource::LocalFile, "", PodFacts::Busy),
                vec!["pod registry busy for over 1s (an enrolment is in progress)"],
            ),
            (
                facts(
                    true,
                    controller(),
                    "v2",
                    PodFacts::WithoutCertificate(vec!["apps/a (spiffe://x/ns/apps/sa/a)".into()]),
                ),
                vec!["pod apps/a (spiffe://x/ns/apps/sa/a) has no valid workload certificate yet"],
            ),
        ];
        for (facts, want) in cases {
            assert_eq!(reasons(&facts), want, "{facts:?}");
        }
    }

    #[test]
    fn the_answer_lists_the_reasons() {
        assert_eq!(response(&[]).status(), StatusCode::OK);
        let not_ready = response(&["a".into(), "b".into()]);
        assert_eq!(not_ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
