//! The security headers every response carries (pages, API, static files,
//! artifacts, errors and 404s), set by tower-http layers around the whole
//! router so that no handler can forget them, and how a stored artifact is
//! offered to a browser: raster images inline, anything else as a download.

use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::{
    CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use tower_http::set_header::SetResponseHeaderLayer;

/// Only the server's own scripts, styles, images and event streams; no inline
/// script or style, no plugins, no framing by any site (the run pages carry
/// Cancel and Retry buttons), forms post only back here.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; font-src 'self'; object-src 'none'; \
     base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// Every header this module sets, with its value (tests check each response
/// against this list).
pub const HEADERS: [(&str, &str); 4] = [
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    // For browsers that predate `frame-ancestors`.
    ("x-frame-options", "DENY"),
];

/// Wrap `router` so that every response carries [`HEADERS`]; a handler that
/// set one of them itself keeps its own value.
pub fn add<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    let set = |name, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    router
        .layer(set(CONTENT_SECURITY_POLICY, CSP))
        .layer(set(X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(set(REFERRER_POLICY, "same-origin"))
        .layer(set(X_FRAME_OPTIONS, "DENY"))
}

/// Raster images, which a browser shows inline and which cannot carry script
/// (SVG can, so it is downloaded like anything else).
const INLINE_MEDIA_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// The `Content-Type` of a stored artifact: its stored media type, or
/// `application/octet-stream` when that is not a valid header value.
pub fn artifact_content_type(media_type: &str) -> HeaderValue {
    HeaderValue::from_str(media_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

/// The `Content-Disposition` of an artifact named `name` of `media_type`:
/// `inline` for raster images (the pages show them), else an `attachment`
/// with a filename of letters, digits, `.`, `_` and `-` only, so a stored
/// file is never rendered as one of our pages.
pub fn artifact_disposition(media_type: &str, name: &str) -> HeaderValue {
    let essence = media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let filename = safe_filename(name);
    let value = if INLINE_MEDIA_TYPES.contains(&essence.as_str()) {
        format!("inline; filename=\"{filename}\"")
    } else {
        format!("attachment; filename=\"{filename}\"")
    };
    // Only ASCII letters, digits and punctuation remain, so this cannot fail.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// `name` reduced to what any browser and file system accept: other
/// characters become `_`, no leading dot, at most 128 bytes, never empty.
fn safe_filename(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    let cleaned = cleaned.trim_start_matches('.');
    if cleaned.is_empty() {
        "artifact".to_string()
    } else {
        cleaned.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: HeaderValue) -> String {
        v.to_str().unwrap_or_default().to_string()
    }

    #[test]
    fn raster_images_are_inline_and_everything_else_is_a_download() {
        assert_eq!(
            text(artifact_disposition("image/png", "recon_e0001.png")),
            "inline; filename=\"recon_e0001.png\""
        );
        assert_eq!(
            text(artifact_disposition("IMAGE/JPEG; q=1", "a.jpg")),
            "inline; filename=\"a.jpg\""
        );
        for media in [
            "image/svg+xml",
            "text/html",
            "text/plain",
            "application/octet-stream",
            "",
        ] {
            assert!(
                text(artifact_disposition(media, "x")).starts_with("attachment;"),
                "{media}"
            );
        }
    }

    #[test]
    fn filenames_cannot_break_out_of_the_header() {
        assert_eq!(
            text(artifact_disposition("text/html", "a\"; b=\r\nc/../é.html")),
            "attachment; filename=\"a___b___c_..__.html\""
        );
        assert_eq!(safe_filename("..."), "artifact");
        assert_eq!(safe_filename(""), "artifact");
        assert_eq!(safe_filename(".env"), "env");
        assert_eq!(safe_filename(&"x".repeat(300)).len(), 128);
    }

    #[test]
    fn an_unusable_stored_media_type_is_served_as_bytes() {
        assert_eq!(text(artifact_content_type("image/png")), "image/png");
        assert_eq!(
            text(artifact_content_type("text/html\r\nx: y")),
            "application/octet-stream"
        );
    }
}
