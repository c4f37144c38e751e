//! What enrolment announces about a pod: its fields, their validation (every error names the
//! field), and the capture decision from the `istio.io/dataplane-mode` labels.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, NSFS_MAGIC};
use serde::{Deserialize, Serialize};

/// The label that opts a namespace (or, overriding it, a pod) into the mesh.
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
/// The label value that opts in.
pub const DATAPLANE_MODE_AMBIENT: &str = "ambient";

/// A pod as the pod registry (or CNI plugin) announces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodInfo {
    /// Unique id, e.g. `<namespace>/<name>`.
    pub uid: String,
    /// Pod name.
    pub name: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Service account (identity).
    #[serde(default = "default_service_account")]
    pub service_account: String,
    /// Path of the pod's network namespace, e.g. `/var/run/netns/<name>`.
    pub netns: PathBuf,
    /// The pod's cgroup v2 directory.
    pub cgroup: PathBuf,
    /// Pod addresses.
    pub addresses: Vec<IpAddr>,
    /// Pod labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Labels of the pod's namespace.
    #[serde(default)]
    pub namespace_labels: BTreeMap<String, String>,
}

fn default_service_account() -> String {
    "default".to_owned()
}

impl PodInfo {
    /// Whether the pod is captured: its own `istio.io/dataplane-mode` label decides when present
    /// (`ambient` in, anything else such as `none` out), else its namespace's label.
    pub fn wants_capture(&self) -> bool {
        match self.labels.get(DATAPLANE_MODE_LABEL) {
            Some(mode) => mode == DATAPLANE_MODE_AMBIENT,
            None => {
                self.namespace_labels
                    .get(DATAPLANE_MODE_LABEL)
                    .map(String::as_str)
                    == Some(DATAPLANE_MODE_AMBIENT)
            }
        }
    }

    /// Checks what enrolment announced: ids present, real pod addresses, and paths that are a
    /// network namespace and a cgroup v2 directory.
    pub fn validate(&self) -> Result<(), InvalidPod> {
        let invalid = |field: &'static str, reason: String| InvalidPod { field, reason };
        if self.uid.trim().is_empty() {
            return Err(invalid("uid", "must not be empty".into()));
        }
        if self.namespace.trim().is_empty() {
            return Err(invalid("namespace", "must not be empty".into()));
        }
        if self.addresses.is_empty() {
            return Err(invalid(
                "addresses",
                "a pod needs at least one address".into(),
            ));
        }
        if let Some(bad) = self
            .addresses
            .iter()
            .find(|a| a.is_loopback() || a.is_unspecified())
        {
            return Err(invalid("addresses", format!("{bad} is not a pod address")));
        }
        check_fs(&self.netns, NSFS_MAGIC, "netns", "a network namespace")?;
        check_fs(
            &self.cgroup,
            CGROUP2_SUPER_MAGIC,
            "cgroup",
            "a cgroup v2 directory",
        )?;
        Ok(())
    }
}

/// A field of an announced pod is invalid.
#[derive(Debug, thiserror::Error)]
#[error("invalid pod: field {field}: {reason}")]
pub struct InvalidPod {
    /// The field, as enrolment names it.
    pub field: &'static str,
    /// Why it is invalid.
    pub reason: String,
}

fn check_fs(
    path: &Path,
    magic: nix::sys::statfs::FsType,
    field: &'static str,
    what: &str,
) -> Result<(), InvalidPod> {
    match statfs(path) {
        Ok(fs) if fs.filesystem_type() == magic => Ok(()),
        Ok(_) => Err(InvalidPod {
            field,
            reason: format!("{} is not {what}", path.display()),
        }),
        Err(e) => Err(InvalidPod {
            field,
            reason: format!("{}: {e}", path.display()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns_label: Option<&str>, pod_label: Option<&str>) -> PodInfo {
        let mut info = PodInfo {
            uid: "default/a".into(),
            name: "a".into(),
            namespace: "default".into(),
            service_account: "default".into(),
            netns: "/nonexistent".into(),
            cgroup: "/nonexistent".into(),
            addresses: vec!["198.18.1.10".parse().expect("ip")],
            labels: BTreeMap::new(),
            namespace_labels: BTreeMap::new(),
        };
        if let Some(v) = ns_label {
            info.namespace_labels
                .insert(DATAPLANE_MODE_LABEL.into(), v.into());
        }
        if let Some(v) = pod_label {
            info.labels.insert(DATAPLANE_MODE_LABEL.into(), v.into());
        }
        info
    }

    #[test]
    fn capture_decision_pod_label_overrides_namespace() {
        let cases = [
            (None, None, false),
            (Some("ambient"), None, true),
            (Some("ambient"), Some("none"), false),
            (None, Some("ambient"), true),
            (Some("sidecar"), None, false),
        ];
        for (ns, p, want) in cases {
            assert_eq!(
                pod(ns, p).wants_capture(),
                want,
                "namespace {ns:?} pod {p:?}"
            );
        }
    }

    #[test]
    fn validation_names_the_field() {
        let mut p = pod(None, None);
        p.addresses = vec!["127.0.0.1".parse().expect("ip")];
        assert!(p
            .validate()
            .expect_err("loopback")
            .to_string()
            .contains("addresses"));
        let p = pod(None, None);
        let err = p.validate().expect_err("missing netns").to_string();
        assert!(
            err.contains("netns") && err.contains("/nonexistent"),
            "{err}"
        );
        let mut p = pod(None, None);
        p.netns = "/proc/self/ns/net".into();
        let err = p.validate().expect_err("missing cgroup").to_string();
        assert!(err.contains("field cgroup"), "{err}");
        let mut p = pod(None, None);
        p.netns = "/tmp".into();
        let err = p.validate().expect_err("not a netns").to_string();
        assert!(err.contains("is not a network namespace"), "{err}");
    }
}
