//! Cross-site request protection for cookie-authenticated writes.
//!
//! Two independent checks, both required (OWASP's "defence in depth"):
//! 1. **Origin**: a browser says where a request comes from. `Sec-Fetch-Site`
//!    must be `same-origin` (or `none`, typed by the user), and an `Origin`
//!    header, when present, must name this very host.
//! 2. **Double submit**: sign-in sets a random `maelab_csrf` cookie (readable
//!    by our pages, SameSite=Strict); a write must repeat its value in the
//!    `X-CSRF-Token` header or a `csrf_token` form field. Another site can
//!    neither read the cookie nor guess the value.

use axum::http::HeaderMap;
use axum::http::header::{COOKIE, HOST, ORIGIN};
use rand::RngCore;

use crate::http::AppError;

/// The sign-in cookie: a server-side session's secret (never a token's), HttpOnly.
pub const SESSION_COOKIE: &str = "maelab_session";
/// The double-submit cookie: random, readable by our pages' scripts.
pub const CSRF_COOKIE: &str = "maelab_csrf";
/// Header that carries the double-submit value from scripts.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Form field that carries it from plain HTML forms.
pub const CSRF_FIELD: &str = "csrf_token";

/// A fresh random double-submit value.
pub fn new_token() -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The double-submit value for templates to put in a hidden `csrf_token`
/// field (None when the browser has not signed in).
pub fn form_token(headers: &HeaderMap) -> Option<String> {
    cookie(headers, CSRF_COOKIE).map(str::to_string)
}

/// Check 1: the request comes from one of our own pages.
pub fn check_origin(headers: &HeaderMap) -> Result<(), AppError> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if !matches!(site, "same-origin" | "none") {
            return Err(AppError::Forbidden(format!(
                "cross-site request refused (Sec-Fetch-Site: {site})"
            )));
        }
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or("");
        if host.is_empty() || origin_host != host {
            return Err(AppError::Forbidden(format!(
                "cross-site request refused (Origin {origin} is not this server)"
            )));
        }
    }
    Ok(())
}

/// Check 2: `submitted` equals the `maelab_csrf` cookie (compared in
/// constant time).
pub fn check_double_submit(headers: &HeaderMap, submitted: Option<&str>) -> Result<(), AppError> {
    let expected = cookie(headers, CSRF_COOKIE);
    match (expected, submitted) {
        (Some(e), Some(s)) if !e.is_empty() && constant_time_eq(e.as_bytes(), s.as_bytes()) => {
            Ok(())
        }
        _ => Err(AppError::Forbidden(format!(
            "missing or wrong CSRF token: send the `{CSRF_COOKIE}` cookie's value as the \
             `{CSRF_FIELD}` form field or the X-CSRF-Token header"
        ))),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn same_origin_passes_and_cross_site_is_refused() {
        assert!(check_origin(&headers(&[("host", "h:8080"), ("origin", "http://h:8080")])).is_ok());
        assert!(check_origin(&headers(&[("sec-fetch-site", "same-origin")])).is_ok());
        assert!(check_origin(&headers(&[("sec-fetch-site", "cross-site")])).is_err());
        assert!(check_origin(&headers(&[("sec-fetch-site", "same-site")])).is_err());
        assert!(check_origin(&headers(&[("host", "h:8080"), ("origin", "http://evil")])).is_err());
        assert!(check_origin(&headers(&[("host", "h:8080"), ("origin", "null")])).is_err());
    }

    #[test]
    fn double_submit_needs_the_cookie_value() {
        let h = headers(&[("cookie", "a=1; maelab_csrf=abc; b=2")]);
        assert!(check_double_submit(&h, Some("abc")).is_ok());
        assert!(check_double_submit(&h, Some("abd")).is_err());
        assert!(check_double_submit(&h, None).is_err());
        assert!(check_double_submit(&headers(&[]), Some("abc")).is_err());
    }
}
