//! Who may connect to the embedded cluster: whoever holds its password, no one else.
//!
//! The password is 32 bytes from the OS's RNG, hex-encoded (URL-safe), kept in
//! [`PASSWORD_FILE`] in the data folder: 0600, owned by the account that runs
//! maelab, read again at every start, so `maelab token`, `scripts/start` and
//! workers on the host need nobody to type it. Every pg_hba.conf rule asks for
//! it (scram-sha-256), and the cluster listens on 127.0.0.1 only, with no Unix
//! socket. A cluster made by an older maelab (`initdb --auth=trust`) is
//! upgraded in place on its next start; its data is not touched.

use std::fmt;
use std::path::Path;

use nix::unistd::User;
use rand::RngCore;

use super::{EmbeddedPgError, ROLE, private_file};

/// The file in the data folder holding the cluster's password.
pub const PASSWORD_FILE: &str = "postgres-password";

/// The only authentication method the cluster accepts.
const METHOD: &str = "scram-sha-256";

/// pg_hba.conf after an upgrade: the rules `initdb --auth=scram-sha-256` writes.
const PG_HBA: &str = "\
# Written by maelab: every connection needs the password in the data folder's
# postgres-password file (the server listens on 127.0.0.1 only, no Unix socket).
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 scram-sha-256
host    all          all   127.0.0.1/32  scram-sha-256
host    all          all   ::1/128       scram-sha-256
local   replication  all                 scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
host    replication  all   ::1/128       scram-sha-256
";

/// The cluster's password; never printed by `Debug`.
#[derive(Clone)]
pub(super) struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

impl Password {
    fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(hex::encode(bytes))
    }

    /// At least 32 characters, all URL-safe: it goes into URLs unescaped and
    /// into `ALTER ROLE … PASSWORD '…'` unquoted.
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let url_safe = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        (text.len() >= 32 && text.chars().all(url_safe)).then(|| Self(text.to_string()))
    }

    pub(super) fn as_str(&self) -> &str {
        &self.0
    }
}

/// The password in `path`, made and saved first when there is none (a new
/// cluster, or a trust one about to be upgraded). Saved before any cluster
/// uses it, so a crash in between leaves nothing locked.
pub(super) fn load_or_create(path: &Path) -> Result<Password, EmbeddedPgError> {
    if let Some(text) = private_file::read(path)? {
        return Password::parse(&text).ok_or_else(|| EmbeddedPgError::NotPrivate {
            path: path.to_path_buf(),
            reason: "not a password maelab wrote (32 or more URL-safe characters)".into(),
        });
    }
    let password = Password::generate();
    private_file::write(path, format!("{}\n", password.as_str()).as_bytes(), None)?;
    tracing::info!(path = %path.display(), "created the embedded PostgreSQL password");
    Ok(password)
}

/// Make sure the cluster lets in only holders of `password`. Nothing to do
/// when every pg_hba.conf rule already asks for scram-sha-256 (so a second
/// start changes nothing). Otherwise, on the one connection that trust still
/// let in: set the role's password, rewrite `hba_file`, reload. Returns
/// whether it upgraded.
pub(super) async fn require_password(
    conn: &mut sqlx::PgConnection,
    password: &Password,
    hba_file: &Path,
    owner: Option<&User>,
) -> Result<bool, EmbeddedPgError> {
    // PostgreSQL's own parse of the file on disk; a line it cannot read counts as loose.
    let loose: i64 = sqlx::query_scalar(
        "select count(*) from pg_hba_file_rules \
         where error is not null or auth_method is distinct from $1",
    )
    .bind(METHOD)
    .fetch_one(&mut *conn)
    .await?;
    if loose == 0 {
        return Ok(false);
    }
    tracing::warn!(
        rules = loose,
        hba_file = %hba_file.display(),
        "the embedded PostgreSQL let local accounts in without a password; setting one and requiring it"
    );
    sqlx::raw_sql("set password_encryption = 'scram-sha-256'")
        .execute(&mut *conn)
        .await?;
    // A utility statement takes no parameters; `Password::parse` keeps it to
    // URL-safe characters, so the literal needs no escaping. The simple query
    // protocol leaves no prepared statement holding it.
    let alter = format!("alter role {ROLE} password '{}'", password.as_str());
    sqlx::raw_sql(&alter).execute(&mut *conn).await?;
    private_file::write(hba_file, PG_HBA.as_bytes(), owner)?;
    let reloaded: bool = sqlx::query_scalar("select pg_reload_conf()")
        .fetch_one(&mut *conn)
        .await?;
    if !reloaded {
        return Err(EmbeddedPgError::Command {
            what: "pg_reload_conf()".into(),
            detail: "the server did not accept the reload signal".into(),
        });
    }
    tracing::info!(hba_file = %hba_file.display(), "embedded PostgreSQL now requires its password");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_long_url_safe_and_different() {
        let a = Password::generate();
        let b = Password::generate();
        assert_eq!(a.as_str().len(), 64);
        assert!(Password::parse(a.as_str()).is_some());
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(format!("{a:?}"), "Password(..)");
    }

    #[test]
    fn parse_refuses_short_or_quotable_text() {
        assert!(Password::parse("short").is_none());
        assert!(Password::parse(&format!("{}'; drop role x; --", "a".repeat(40))).is_none());
        assert!(Password::parse(&format!("{}\n", "a".repeat(40))).is_some());
    }
}
