//! The local-directory source: every `*.yaml`, `*.yml` and `*.json` file under a directory
//! (recursively) holds multi-document YAML. The directory is polled; only files whose content
//! changed are re-parsed, and each file's objects replace that file's previous objects, so a
//! change is applied incrementally. Polling (rather than inotify) works the same on every file
//! system, including bind mounts and ConfigMap volumes whose symlinks swap atomically.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::controller::{Change, Controller, ControllerError};
use crate::load::parse_yaml;

/// Deepest directory level scanned (guards against symlink loops).
const MAX_DEPTH: usize = 16;

/// Why a scan failed.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// The directory could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// Publishing failed.
    #[error(transparent)]
    Controller(#[from] ControllerError),
}

/// A watched directory.
#[derive(Debug)]
pub struct DirSource {
    root: PathBuf,
    controller: Arc<Controller>,
    /// Content hash of every file seen, by path.
    seen: BTreeMap<PathBuf, u64>,
}

impl DirSource {
    /// A source for a directory (nothing is read until [`scan`](Self::scan) or
    /// [`run`](Self::run)).
    pub fn new(root: &Path, controller: Arc<Controller>) -> Self {
        DirSource {
            root: root.to_owned(),
            controller,
            seen: BTreeMap::new(),
        }
    }

    /// Reads changed files and applies them in one batch; returns how many files changed.
    pub fn scan(&mut self) -> Result<usize, DirError> {
        let mut files = Vec::new();
        collect(&self.root, 0, &mut files)?;
        let mut changes = Vec::new();
        let mut present = BTreeMap::new();
        for path in files {
            // A file that vanished or is unreadable between listing and reading is treated as
            // absent this round; the next scan sees it again.
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let mut hasher = DefaultHasher::new();
            text.hash(&mut hasher);
            let hash = hasher.finish();
            if self.seen.get(&path) != Some(&hash) {
                let unit = self.unit(&path);
                changes.push(Change::ReplaceUnit {
                    parsed: parse_yaml(&unit, &text),
                    unit,
                });
            }
            present.insert(path, hash);
        }
        for gone in self.seen.keys().filter(|p| !present.contains_key(*p)) {
            changes.push(Change::RemoveUnit {
                unit: self.unit(gone),
            });
        }
        self.seen = present;
        let count = changes.len();
        if count > 0 {
            tracing::info!(files = count, "configuration files changed");
            self.controller.apply(changes)?;
        }
        Ok(count)
    }

    /// Scans now and then every `interval`, forever.
    pub async fn run(mut self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(e) = self.scan() {
                tracing::warn!(error = %e, "scanning configuration directory");
            }
        }
    }

    /// The unit (and error origin) of a file: its path relative to the root.
    fn unit(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

fn collect(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), DirError> {
    let read_err = |source| DirError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        // Hidden entries include editors' swap files and Kubernetes' `..data` volume links.
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            if depth < MAX_DEPTH {
                collect(&path, depth + 1, out)?;
            }
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}
