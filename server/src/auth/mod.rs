//! Access: API tokens (stored as sha256, shown once), the extractors every
//! handler uses to say whether it reads or writes, and the browser sign-in
//! with its cookie and cross-site request protection.
//!
//! - Writes always need a token: `Authorization: Bearer <secret>` from CI and
//!   the CLI, or the sign-in cookie from a browser.
//! - Reads are open unless the server runs with `--require-auth-for-reads`.
//! - A cookie-authenticated write must also prove it comes from our own pages
//!   (see [`csrf`]); a bearer token cannot be attached by another site, so it
//!   needs no such proof.

pub mod csrf;
pub mod extract;
pub mod session;
pub mod tokens;

pub use extract::{Caller, ReadAccess, WriteAccess};
pub use tokens::{TokenError, TokenInfo};
