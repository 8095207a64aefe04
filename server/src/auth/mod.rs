//! Access: API tokens (stored as sha256, shown once, scoped, optionally
//! expiring), the extractors every handler uses to say the scope it needs,
//! and the browser sign-in with its server-side session and cross-site
//! request protection.
//!
//! - Writes always need a token: `Authorization: Bearer <secret>` from CI and
//!   the CLI, or the sign-in cookie from a browser. An expired or revoked one
//!   is a 401 with the reason; one whose scope is too weak is a 403 naming
//!   the scope it has and the scope the route needs ([`scope`]).
//! - Reads are open unless the server runs with `--require-auth-for-reads`.
//! - A cookie-authenticated write must also prove it comes from our own pages
//!   (see [`csrf`]); a bearer token cannot be attached by another site, so it
//!   needs no such proof.

pub mod csrf;
pub mod expiry;
pub mod extract;
pub mod ownership;
pub mod scope;
pub mod session;
pub mod session_store;
pub mod tokens;

pub use extract::{Access, Caller, CsrfForm, ReadAccess};
pub use scope::{Admin, Read, Scope, Submit, Write};
pub use tokens::{TokenError, TokenInfo};
