//! Files that hold the embedded cluster's secret (its password, the URL that
//! carries it, pg_hba.conf): mode 0600 from their first byte, replaced whole,
//! and read only when the account running maelab owns them.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::unistd::User;

use super::{EmbeddedPgError, io_err};

/// Write `contents` to `path`, mode 0600, through a temporary file renamed
/// over it: a reader sees the old file or the new one, never a half, and a
/// link planted at `path` is replaced rather than followed. `owner` (only when
/// maelab runs as root) hands the file to the cluster's OS user.
pub(super) fn write(
    path: &Path,
    contents: &[u8],
    owner: Option<&User>,
) -> Result<(), EmbeddedPgError> {
    let tmp = temp_path(path);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&tmp, e)),
    }
    write_new(&tmp, contents, owner)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err(path, e)
        })
}

/// Create `path` (which must not exist: O_EXCL, so no file or link is
/// reused) with mode 0600 and `contents`, flushed to disk.
fn write_new(path: &Path, contents: &[u8], owner: Option<&User>) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()?;
    if let Some(owner) = owner {
        std::os::unix::fs::fchown(&file, Some(owner.uid.as_raw()), Some(owner.gid.as_raw()))?;
    }
    Ok(())
}

/// The contents of the secret file at `path` (`None` when there is none).
/// A file owned by another account is refused: whoever planted it knows the
/// password. One that others may read is tightened to 0600, with a warning.
pub(super) fn read(path: &Path) -> Result<Option<String>, EmbeddedPgError> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path);
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        // O_NOFOLLOW on a symbolic link.
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
            return Err(not_private(path, "a symbolic link".into()));
        }
        Err(e) => return Err(io_err(path, e)),
    };
    let meta = file.metadata().map_err(|e| io_err(path, e))?;
    if !meta.is_file() {
        return Err(not_private(path, "not a regular file".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(not_private(
            path,
            format!(
                "owned by uid {}, not by the account running maelab (uid {me})",
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = %format!("{:o}", meta.mode() & 0o777), "secret file readable by others; setting it to 0600");
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io_err(path, e))?;
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| io_err(path, e))?;
    Ok(Some(text))
}

/// `.NAME.tmp` beside `path`.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

fn not_private(path: &Path, reason: String) -> EmbeddedPgError {
    EmbeddedPgError::NotPrivate {
        path: path.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "maelab-private-file-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn writes_0600_and_replaces_a_planted_link_instead_of_following_it() {
        let dir = temp_dir();
        let target = dir.join("elsewhere");
        std::fs::write(&target, "untouched").expect("target");
        let path = dir.join("secret");
        std::os::unix::fs::symlink(&target, &path).expect("link");

        write(&path, b"s3cret\n", None).expect("write");

        let meta = std::fs::symlink_metadata(&path).expect("meta");
        assert!(meta.is_file(), "the link was replaced by a file");
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&target).expect("target"),
            "untouched"
        );
        assert_eq!(read(&path).expect("read").as_deref(), Some("s3cret\n"));
        assert!(!temp_path(&path).exists(), "no temporary file left");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reading_tightens_a_loose_file_and_refuses_links() {
        let dir = temp_dir();
        let path = dir.join("secret");
        std::fs::write(&path, "pw").expect("file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");

        assert_eq!(read(&path).expect("read").as_deref(), Some("pw"));
        let mode = std::fs::metadata(&path).expect("meta").mode() & 0o777;
        assert_eq!(mode, 0o600);

        let link = dir.join("link");
        std::os::unix::fs::symlink(&path, &link).expect("link");
        let err = read(&link).expect_err("a link is not a private file");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(read(&dir.join("missing")).expect("missing"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
