//! Reading and writing the CA root as PEM files; the private key is written with mode 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::CaError;

/// File name of the root certificate in the CA directory.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
/// File name of the root private key (PKCS#8 PEM) in the CA directory.
pub const ROOT_KEY_FILE: &str = "root-key.pem";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The root's (certificate PEM, key PEM) from `dir`, or `None` when neither file exists.
/// Exactly one of the two existing is an error: a half-written CA must not be replaced silently.
pub fn load(dir: &Path) -> Result<Option<(String, String)>, CaError> {
    let cert_path = dir.join(ROOT_CERT_FILE);
    let key_path = dir.join(ROOT_KEY_FILE);
    match (cert_path.exists(), key_path.exists()) {
        (false, false) => Ok(None),
        (true, true) => {
            let cert = fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
            let key = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
            Ok(Some((cert, key)))
        }
        (true, false) => Err(missing(&key_path)),
        (false, true) => Err(missing(&cert_path)),
    }
}

fn missing(path: &Path) -> CaError {
    CaError::Io {
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "the other root file exists"),
    }
}

/// Writes the root into `dir` (created if needed): the key first, with mode 0600.
pub fn save(dir: &Path, cert_pem: &str, key_pem: &str) -> Result<(), CaError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let key_path = dir.join(ROOT_KEY_FILE);
    write_file(&key_path, key_pem, 0o600)?;
    let cert_path = dir.join(ROOT_CERT_FILE);
    write_file(&cert_path, cert_pem, 0o644)
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), CaError> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    file.write_all(contents.as_bytes()).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    // `mode` only applies when the file is created: force it for a leftover temp file too.
    fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}
