//! The controller on a temporary directory with two in-process agent clients: a file change is
//! acknowledged by both; killing the controller leaves them with their config; after a restart
//! they resync. Loopback only, over the control plane's TLS with node tokens, every wait
//! bounded.

#[path = "support/pki.rs"]
#[allow(dead_code, reason = "each test crate uses a part of the fixture")]
mod pki;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_common::api::config::ClientKind;
use mesh_common::api::{ClientOptions, ConfigClient};
use mesh_controller::admin::StatusReport;
use mesh_controller::run::{self, RunOptions};
use mesh_controller::translate::TranslateOptions;
use pki::Pki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(15);

/// A controller on its own runtime and thread, so it can be killed like a process: dropping the
/// runtime cuts every connection without a goodbye.
struct ControllerProcess {
    grpc: SocketAddr,
    admin: SocketAddr,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControllerProcess {
    fn start(dir: &Path, grpc: SocketAddr, pki: &Pki) -> Self {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (kill, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let options = RunOptions {
            security: pki.security(),
            config_dir: Some(dir.to_owned()),
            kubernetes: None,
            grpc_addr: grpc,
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            poll_interval: Duration::from_millis(50),
            translate: TranslateOptions::default(),
        };
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("controller runtime");
            runtime.block_on(async move {
                let running = run::start(options).await.expect("controller starts");
                ready_tx
                    .send((running.grpc_addr, running.admin_addr))
                    .expect("test is waiting");
                let _ = kill_rx.await;
                drop(running);
            });
            runtime.shutdown_background();
        });
        let (grpc, admin) = ready_rx
            .recv_timeout(WAIT)
            .expect("controller started in time");
        ControllerProcess {
            grpc,
            admin,
            kill: Some(kill),
            thread: Some(thread),
        }
    }

    fn kill(mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("controller thread ends");
        }
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn admin_status(admin: SocketAddr) -> StatusReport {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(admin)
            .await
            .expect("admin connects");
        stream
            .write_all(b"GET /clients HTTP/1.0\r\nHost: admin\r\n\r\n")
            .await
            .expect("request sent");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("response read");
        let (_, body) = response.split_once("\r\n\r\n").expect("HTTP response");
        serde_json::from_str(body).expect("status JSON")
    };
    tokio::time::timeout(WAIT, fetch)
        .await
        .expect("admin answers in time")
}

async fn wait_for_acks(admin: SocketAddr, version: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let report = admin_status(admin).await;
        let acked = report
            .clients
            .iter()
            .filter(|c| c.acked_version == version)
            .count();
        if report.version == version && acked == 2 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for 2 acks of {version}: {report:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pod(name: &str, node: &str, ip: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {name}}}}}\nspec: {{nodeName: {node}, containers: [{{name: c}}]}}\nstatus: {{phase: Running, podIP: {ip}}}\n"
    )
}

fn write_config(dir: &Path, extra_pods: &str) -> PathBuf {
    let text = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: default, labels: {{istio.io/dataplane-mode: ambient}}}}\n\
         ---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: a-only}}\n\
         spec: {{selector: {{matchLabels: {{app: a}}}}, rules: [{{from: [{{source: {{namespaces: [default]}}}}]}}]}}\n\
         {}{}{extra_pods}",
        pod("a", "node-a", "10.244.1.1"),
        pod("b", "node-b", "10.244.2.1"),
    );
    let path = dir.join("mesh.yaml");
    // Write then rename, as editors and ConfigMap updates do, so a poll never sees half a file.
    let tmp = dir.join(".mesh.yaml.tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, &path).expect("replace config");
    path
}

fn agent(grpc: SocketAddr, pki: &Pki, node: &str) -> ConfigClient {
    let mut options = ClientOptions::new(
        pki.transport(grpc, node),
        &format!("agent/{node}"),
        node,
        ClientKind::Agent,
    );
    options.reconnect_min = Duration::from_millis(50);
    options.reconnect_max = Duration::from_millis(200);
    options.timeout = Duration::from_secs(1);
    ConfigClient::spawn(options)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_change_is_acknowledged_by_both_agents_and_they_survive_a_controller_restart() {
    let pki = Pki::new(&["node-a", "node-b"]);
    let dir = tempfile::tempdir().expect("temp dir");
    write_config(dir.path(), "");
    let controller =
        ControllerProcess::start(dir.path(), SocketAddr::from(([127, 0, 0, 1], 0)), &pki);
    let (grpc, admin) = (controller.grpc, controller.admin);
    let a = agent(grpc, &pki, "node-a");
    let b = agent(grpc, &pki, "node-b");

    // Initial sync: both acknowledge the controller's version; each sees only its node's policy.
    let v1 = admin_status(admin).await.version;
    wait_for_acks(admin, &v1).await;
    assert_eq!(a.snapshot().version, v1);
    assert_eq!(b.snapshot().version, v1);
    assert_eq!(a.snapshot().workloads.len(), 2);
    assert_eq!(
        a.snapshot().authorization_policies.len(),
        1,
        "policy selects a pod on node-a"
    );
    assert!(
        b.snapshot().authorization_policies.is_empty(),
        "node-b has no workload it selects"
    );

    // A file change reaches both and both acknowledge it.
    write_config(dir.path(), &pod("c", "node-b", "10.244.2.2"));
    wait_until("a new version", || a.snapshot().version != v1).await;
    let v2 = a.snapshot().version.clone();
    wait_for_acks(admin, &v2).await;
    assert!(b.snapshot().workload("default/c").is_some());
    assert!(a.status().connected && b.status().connected);

    // Kill the controller: the agents notice, and keep serving the last good config.
    controller.kill();
    wait_until("both agents to notice", || {
        !a.status().connected && !b.status().connected
    })
    .await;
    assert_eq!(a.snapshot().version, v2);
    assert_eq!(b.snapshot().workloads.len(), 3);

    // Change the config while it is down, restart it on the same address: both resync.
    write_config(
        dir.path(),
        &format!(
            "{}{}",
            pod("c", "node-b", "10.244.2.2"),
            pod("d", "node-a", "10.244.1.2")
        ),
    );
    let controller = ControllerProcess::start(dir.path(), grpc, &pki);
    let v3 = admin_status(controller.admin).await.version;
    assert_ne!(v3, v2);
    wait_for_acks(controller.admin, &v3).await;
    assert!(a.snapshot().workload("default/d").is_some());
    assert!(b.snapshot().workload("default/d").is_some());
    assert!(a.status().connections >= 2, "the client reconnected");
    let report = admin_status(controller.admin).await;
    let mut ids: Vec<&str> = report
        .clients
        .iter()
        .map(|c| c.client_id.as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, ["agent/node-a", "agent/node-b"]);
    assert!(
        report.clients.iter().all(|c| c.previous_version == v2),
        "clients report what they held"
    );
    drop((a, b));
    controller.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_keeps_its_initial_config_until_a_controller_answers() {
    let pki = Pki::new(&["x"]);
    let dir = tempfile::tempdir().expect("temp dir");
    // Nothing listens on this port: bind and drop to find a free one.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let mut options =
        ClientOptions::new(pki.transport(free, "x"), "agent/x", "x", ClientKind::Agent);
    options.reconnect_min = Duration::from_millis(20);
    options.reconnect_max = Duration::from_millis(50);
    options.timeout = Duration::from_millis(500);
    options.initial = Some(mesh_common::model::Snapshot {
        version: "local".to_owned(),
        ..Default::default()
    });
    let client = ConfigClient::spawn(options);
    wait_until("a few failed attempts", || client.status().connections >= 3).await;
    assert_eq!(client.snapshot().version, "local");
    assert!(!client.status().connected);
    assert!(client.status().last_error.is_some());

    write_config(dir.path(), "");
    let controller = ControllerProcess::start(dir.path(), free, &pki);
    wait_until("the first sync", || client.status().connected).await;
    assert_eq!(client.snapshot().workloads.len(), 2);
    drop(client);
    controller.kill();
}
