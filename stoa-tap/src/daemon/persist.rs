//! Saving and restoring the observations: written beside, synced, renamed, so
//! a crash at any moment leaves either the previous or the new file whole.

use contracts::{InferenceConfig, Observations};
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name of the saved observations inside the state directory.
pub const FILE: &str = "observations.json";

/// Why saving or restoring failed.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Filesystem error.
    #[error("{path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The saved file is not valid observations.
    #[error("{path}: {message}")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Replaces `path` with `bytes` so that readers (and a crash at any moment)
/// see the old file or the new one, never a mix: written beside, synced, renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    write_with_mode(path, bytes, 0o666)
}

/// [`write_atomic`] for files only the daemon's user may read (mode 0600):
/// state and outbox files hold traffic statistics.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    write_with_mode(path, bytes, 0o600)
}

fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PersistError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    // A leftover temporary file keeps its old mode: set it.
    if mode == 0o600 {
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io(&tmp))?;
    }
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    // The rename itself is durable once the directory is synced.
    if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Writes `obs` atomically into `dir`.
pub fn save(dir: &Path, obs: &Observations) -> Result<u64, PersistError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let text = obs.to_json();
    write_private(&dir.join(FILE), text.as_bytes())?;
    Ok(text.len() as u64)
}

/// Reads the saved observations, if any. A corrupt file is moved aside
/// (`observations.json.corrupt`) so the next save does not destroy evidence.
pub fn restore(dir: &Path, cfg: &InferenceConfig) -> Result<Option<Observations>, PersistError> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PersistError::Io { path, source }),
    };
    match Observations::from_json(&text) {
        Ok(mut obs) => {
            obs.set_config(cfg);
            Ok(Some(obs))
        }
        Err(e) => {
            let aside = dir.join(format!("{FILE}.corrupt"));
            let _ = std::fs::rename(&path, &aside);
            Err(PersistError::Corrupt {
                path,
                message: format!("{e} (moved to {})", aside.display()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_restore_and_corrupt_files_are_set_aside() {
        let tmp = tempfile::Builder::new()
            .prefix("stoa-tap-persist-")
            .tempdir()
            .expect("tmp dir");
        // A state directory that does not exist yet.
        let dir = tmp.path().join("state");
        let cfg = InferenceConfig::default();
        assert!(restore(&dir, &cfg).expect("empty dir").is_none());
        let obs = Observations::new(&cfg);
        save(&dir, &obs).expect("save");
        let back = restore(&dir, &cfg).expect("restore").expect("present");
        assert_eq!(back.to_json(), obs.to_json());
        // Traffic statistics: readable by the daemon's user only, also when
        // an older file was world-readable.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join(FILE)), 0o600);
        std::fs::set_permissions(dir.join(FILE), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        save(&dir, &obs).expect("save again");
        assert_eq!(mode(&dir.join(FILE)), 0o600);
        std::fs::write(dir.join(FILE), "{ not json").expect("write");
        assert!(matches!(
            restore(&dir, &cfg),
            Err(PersistError::Corrupt { .. })
        ));
        assert!(dir.join(format!("{FILE}.corrupt")).exists());
        assert!(restore(&dir, &cfg).expect("after set aside").is_none());
    }
}
