//! What a token may do. Scopes are ordered by power, each including the ones
//! below it:
//!
//! - `read`: reads (which only matter on a server that closes them);
//! - `submit`: also creates runs, studies and external runs, and changes
//!   (cancel, retry, metrics, heartbeats, uploads, finish) only what this
//!   very token created: a CI token cannot cancel a colleague's run;
//! - `write`: everything a user does, on anything;
//! - `admin`: also manages tokens and workers.
//!
//! Routes say the scope they need as a type ([`Needs`]) on their access
//! extractor (`Access<Submit>`), so the check lives in one place.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A token's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Submit,
    Write,
    Admin,
}

impl Scope {
    /// Every scope, weakest first.
    pub const ALL: [Scope; 4] = [Self::Read, Self::Submit, Self::Write, Self::Admin];

    /// The name stored in `api_token.scope` and typed after `--scope`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Submit => "submit",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }

    /// Whether a token of this scope may do what `needed` allows.
    pub fn covers(self, needed: Scope) -> bool {
        self >= needed
    }

    /// Whether this scope may change things other tokens created.
    pub fn changes_anything(self) -> bool {
        self.covers(Self::Write)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a scope; use read, submit, write or admin")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, UnknownScope> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| UnknownScope(s.to_string()))
    }
}

/// The least scope a route needs, as a type parameter of the extractors.
pub trait Needs: Send + Sync + 'static {
    const SCOPE: Scope;
}

/// Routes that read (on a server that closes reads).
#[derive(Debug, Clone, Copy)]
pub struct Read;
/// Routes that create runs and studies, or change the caller's own.
#[derive(Debug, Clone, Copy)]
pub struct Submit;
/// Routes that change anyone's runs and studies.
#[derive(Debug, Clone, Copy)]
pub struct Write;
/// Routes that manage tokens and workers.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl Needs for Read {
    const SCOPE: Scope = Scope::Read;
}
impl Needs for Submit {
    const SCOPE: Scope = Scope::Submit;
}
impl Needs for Write {
    const SCOPE: Scope = Scope::Write;
}
impl Needs for Admin {
    const SCOPE: Scope = Scope::Admin;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_ordered_by_power() {
        assert!(Scope::Admin.covers(Scope::Write));
        assert!(Scope::Write.covers(Scope::Submit));
        assert!(Scope::Submit.covers(Scope::Read));
        assert!(!Scope::Read.covers(Scope::Submit));
        assert!(!Scope::Submit.covers(Scope::Write));
        assert!(!Scope::Write.covers(Scope::Admin));
        assert!(!Scope::Submit.changes_anything());
        assert!(Scope::Write.changes_anything());
    }

    #[test]
    fn scopes_parse_by_name_only() {
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>(), Ok(s));
        }
        let err = "root".parse::<Scope>().unwrap_err();
        assert!(err.to_string().contains("`root`"), "{err}");
        assert!("Write".parse::<Scope>().is_err());
        assert!("".parse::<Scope>().is_err());
    }
}
