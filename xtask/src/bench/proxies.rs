//! nginx and HAProxy as plain HTTP reverse proxies in a meshed pod, where the waypoint would be:
//! the other L7 hops the waypoint is compared with. Each gets its own configuration, written by
//! the bench to a temporary directory, and runs in the foreground in its pod's network
//! namespace and cgroup, one worker (the waypoint runs one thread too), keep-alive both ways
//! and no access log (the waypoint's access log is switched off in the bench as well).

use std::net::SocketAddrV4;
use std::path::Path;

use anyhow::Context;
use mesh_tests::command::wait_listening;
use mesh_tests::{Cluster, Pod};

/// The proxies' HTTP/1.1 listening port (the same as the servers').
pub const H1_PORT: u16 = 8080;
/// Their HTTP/2 (prior knowledge, cleartext) listening port: nginx 1.22 serves either h2c or
/// HTTP/1.1 on a cleartext port, not both, so HTTP/2 has its own port on both proxies.
pub const H2_PORT: u16 = 8081;

/// Which proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    /// nginx (Debian's package).
    Nginx,
    /// HAProxy (Debian's package).
    Haproxy,
}

impl Proxy {
    /// Its configuration: listen on [`H1_PORT`] (HTTP/1.1) and [`H2_PORT`] (h2c), proxy every
    /// request over HTTP/1.1 to `upstream` on pooled keep-alive connections; files under `dir`.
    pub fn config(self, upstream: SocketAddrV4, dir: &Path) -> String {
        let dir = dir.display();
        match self {
            // `user root`: the worker needs no privilege drop in a bench pod, and its temporary
            // directories are in the bench's private directory. `keepalive_requests`: nginx
            // closes a client connection after 1,000 requests by default, which would add
            // reconnections to nginx's figures only.
            Proxy::Nginx => format!(
                "daemon off;
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/nginx-body;
  proxy_temp_path {dir}/nginx-proxy;
  fastcgi_temp_path {dir}/nginx-fastcgi;
  uwsgi_temp_path {dir}/nginx-uwsgi;
  scgi_temp_path {dir}/nginx-scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  upstream backend {{
    server {upstream};
    keepalive 128;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }}
  server {{
    listen {H1_PORT};
    listen {H2_PORT} http2;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host $host;
      proxy_request_buffering off;
      proxy_buffering off;
    }}
  }}
}}
"
            ),
            Proxy::Haproxy => format!(
                "global
  nbthread 1
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend web
  bind :{H1_PORT}
  bind :{H2_PORT} proto h2
  default_backend upstream
backend upstream
  server server {upstream}
"
            ),
        }
    }

    /// The file name of its configuration.
    fn file(self) -> &'static str {
        match self {
            Proxy::Nginx => "nginx.conf",
            Proxy::Haproxy => "haproxy.cfg",
        }
    }

    /// Its name in the tables.
    pub fn name(self) -> &'static str {
        match self {
            Proxy::Nginx => "nginx",
            Proxy::Haproxy => "HAProxy",
        }
    }

    /// Writes its configuration under `dir` and starts it in `pod` (killed with the cluster);
    /// waits until both ports listen.
    pub fn start(
        self,
        cluster: &mut Cluster,
        pod: &Pod,
        upstream: SocketAddrV4,
        dir: &Path,
    ) -> anyhow::Result<()> {
        let dir = dir.join(pod.name.as_str());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = dir.join(self.file());
        std::fs::write(&file, self.config(upstream, &dir))
            .with_context(|| format!("writing {}", file.display()))?;
        let log = std::fs::File::create(dir.join("stderr.log"))?;
        let file = file.display().to_string();
        let mut cmd = match self {
            Proxy::Nginx => {
                let mut cmd = pod.command("nginx");
                let prefix = format!("{}/", dir.display());
                cmd.args(["-c", &file, "-p", &prefix]);
                cmd
            }
            Proxy::Haproxy => {
                let mut cmd = pod.command("haproxy");
                cmd.args(["-db", "-f", &file]);
                cmd
            }
        };
        cmd.stdout(log.try_clone()?).stderr(log);
        cluster
            .spawn(cmd)
            .with_context(|| format!("starting {}", self.name()))?;
        for port in [H1_PORT, H2_PORT] {
            wait_listening(pod, port).with_context(|| {
                let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
                format!(
                    "{} in {} did not listen on {port}: {log}",
                    self.name(),
                    pod.uid()
                )
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_name_the_upstream_one_worker_and_keep_alive() {
        let upstream: SocketAddrV4 = "198.18.2.5:8080".parse().expect("address");
        let dir = Path::new("/tmp/x");
        // (proxy, lines its configuration must have)
        let cases = [
            (
                Proxy::Nginx,
                vec![
                    "daemon off;",
                    "worker_processes 1;",
                    "server 198.18.2.5:8080;",
                    "keepalive 128;",
                    "listen 8080;",
                    "listen 8081 http2;",
                    "proxy_http_version 1.1;",
                    "proxy_set_header Connection \"\";",
                    "pid /tmp/x/nginx.pid;",
                    "access_log off;",
                ],
            ),
            (
                Proxy::Haproxy,
                vec![
                    "nbthread 1",
                    "http-reuse always",
                    "bind :8080",
                    "bind :8081 proto h2",
                    "server server 198.18.2.5:8080",
                ],
            ),
        ];
        for (proxy, lines) in cases {
            let config = proxy.config(upstream, dir);
            for line in lines {
                assert!(
                    config.lines().any(|l| l.trim() == line),
                    "{proxy:?}: no {line:?} in\n{config}"
                );
            }
        }
    }
}
