//! Configuration sources: a watched directory of YAML files, and the Kubernetes API.

pub mod dir;
pub mod kube;
