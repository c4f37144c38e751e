//! Packet captures for the end-to-end tests: tcpdump started inside a namespace of the local
//! cluster, and the few facts about the captured packets the tests assert on.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::command::run;

/// A running tcpdump writing to a file.
#[derive(Debug)]
pub struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    /// Starts `tcpdump` (the `tcpdump` command given, already set to run in the right
    /// namespace) on `interface` with `filter`, and waits until it captures.
    pub fn start(
        mut tcpdump: Command,
        interface: &str,
        filter: &str,
        file: &Path,
    ) -> anyhow::Result<Capture> {
        let mut child = tcpdump
            .args(["--immediate-mode", "-i", interface, "-U", "-s", "0", "-w"])
            .arg(file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump")?;
        // tcpdump says "listening on <interface>" once it captures.
        let stderr = child.stderr.take().context("tcpdump stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        let capture = Capture {
            child,
            file: file.to_owned(),
        };
        rx.recv_timeout(Duration::from_secs(5))
            .context("tcpdump did not start capturing")?;
        Ok(capture)
    }

    /// Stops the capture (after a moment for the last packets) and returns the pcap file.
    pub fn stop(mut self) -> anyhow::Result<Vec<u8>> {
        std::thread::sleep(Duration::from_millis(300));
        run("kill", &["-INT", &self.child.id().to_string()])?;
        let _ = self.child.wait();
        Ok(std::fs::read(&self.file)?)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP segment of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length.
    pub payload: usize,
}

/// The IPv4 TCP segments of a pcap file (Ethernet, Linux cooked v1 or v2 link types).
pub fn tcp_segments(pcap: &[u8]) -> anyhow::Result<Vec<Segment>> {
    if pcap.len() < 24 || pcap[..4] != [0xd4, 0xc3, 0xb2, 0xa1] {
        bail!("not a little-endian pcap file");
    }
    let link_header = match u32::from_le_bytes([pcap[20], pcap[21], pcap[22], pcap[23]]) {
        1 => 14,   // Ethernet
        113 => 16, // Linux cooked (SLL)
        276 => 20, // Linux cooked v2 (SLL2)
        other => bail!("unsupported pcap link type {other}"),
    };
    let mut segments = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let captured =
            u32::from_le_bytes([pcap[at + 8], pcap[at + 9], pcap[at + 10], pcap[at + 11]]) as usize;
        let start = at + 16;
        let end = start + captured;
        if end > pcap.len() {
            break; // a record cut short by the stop
        }
        if let Some(segment) = ipv4_tcp(&pcap[start..end], link_header) {
            segments.push(segment);
        }
        at = end;
    }
    Ok(segments)
}

fn ipv4_tcp(frame: &[u8], link_header: usize) -> Option<Segment> {
    let ip = frame.get(link_header..)?;
    if ip.first()? >> 4 != 4 || *ip.get(9)? != 6 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let tcp = ip.get(ihl..)?;
    let data_offset = usize::from(tcp.get(12)? >> 4) * 4;
    Some(Segment {
        src_port: u16::from_be_bytes([tcp[0], tcp[1]]),
        dst_port: u16::from_be_bytes([tcp[2], tcp[3]]),
        payload: total.checked_sub(ihl + data_offset)?,
    })
}
