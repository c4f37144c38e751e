//! Kubernetes YAML for the local cluster's pods, so the controller sees the same pods the
//! cluster created (names, nodes, service accounts, addresses).

use crate::cluster::Pod;

/// A `Pod` object for `pod` on `node`, service account = pod name, label `app: <app>`.
pub fn pod_yaml(pod: &Pod, node: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}\nspec:\n  nodeName: {node}\n  serviceAccountName: {name}\n  containers: [{{name: app, image: mesh-testapp}}]\nstatus:\n  phase: Running\n  podIP: \"{ip4}\"\n  podIPs: [{{ip: \"{ip4}\"}}, {{ip: \"{ip6}\"}}]\n",
        name = pod.name,
        ns = pod.namespace,
        ip4 = pod.ip4,
        ip6 = pod.ip6,
    )
}

/// A `Namespace`, opted into the mesh or not.
pub fn namespace_yaml(name: &str, ambient: bool) -> String {
    let labels = if ambient {
        "{istio.io/dataplane-mode: ambient}"
    } else {
        "{}"
    };
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {labels}}}\n")
}

/// A `Node` with labels, e.g. `topology.kubernetes.io/zone` (the controller gives each pod on
/// it the node's locality). Label values are quoted, so any string is safe.
pub fn node_yaml(name: &str, labels: &[(&str, &str)]) -> String {
    let labels: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k:?}: {v:?}"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {name:?}, labels: {{{}}}}}\n",
        labels.join(", ")
    )
}

/// A `Service` with a fixed cluster IP selecting `app: <app>`.
pub fn service_yaml(
    namespace: &str,
    name: &str,
    cluster_ip: &str,
    port: u16,
    target_port: u16,
    app: &str,
) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  clusterIP: {cluster_ip}\n  selector: {{app: {app}}}\n  ports: [{{name: tcp, port: {port}, targetPort: {target_port}}}]\n"
    )
}

/// Replaces `dir/name` with `content` atomically (written beside the directory, then renamed in):
/// the controller polling `dir` never reads a half-written file, which it would publish as a
/// model without what the file held.
pub fn replace_file(dir: &std::path::Path, name: &str, content: &str) -> std::io::Result<()> {
    let parent = dir.parent().unwrap_or(dir);
    let staged = parent.join(format!(".{name}.staged"));
    std::fs::write(&staged, content)?;
    std::fs::rename(&staged, dir.join(name))
}
