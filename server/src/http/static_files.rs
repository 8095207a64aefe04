//! The static files under `/static/` (the app's CSS and scripts, the vendored
//! chart library): compiled into the binary, so that `maelab serve` runs from
//! any directory, or read from the folder `--static-dir` names, so that they
//! can be edited without a rebuild.
//!
//! An embedded file is answered with its content type, an `ETag` per
//! representation, `304 Not Modified` when `If-None-Match` holds one of its
//! tags, and a gzip or brotli variant (compressed once, at first use) when
//! the client accepts one. Vendored files carry their version in their folder
//! name, so browsers keep them for a year; the app's own files keep their
//! names from release to release, so browsers revalidate them at every use
//! (a 304 costs a round trip, not the bytes) and never run a stale script
//! against a new page. Only the embedded names answer: a path with `..` or
//! any other name is a 404.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::LazyLock;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path as UrlPath;
use axum::http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_NONE_MATCH, VARY,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::Embed;
use tower_http::services::ServeDir;

/// The folder compiled into the binary (tests compare what is served with it).
pub const SOURCE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../static");

/// Vendored files: versioned folder names, so their bytes never change.
const VENDOR_CACHE: &str = "public, max-age=31536000, immutable";
/// The app's own files: keep, but ask whether they changed before each use.
const APP_CACHE: &str = "no-cache";

#[derive(Embed)]
#[folder = "../static"]
struct Embedded;

/// Compress the embedded files now, off the async threads, so that the
/// first page load does not wait for it (it took 1.8 s in a debug build).
/// Outside a runtime the first request does it.
fn warm() {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn_blocking(|| LazyLock::force(&FILES));
    }
}

/// `/static/…` from `dir` when one is given, else from the binary.
pub fn router<S: Clone + Send + Sync + 'static>(dir: Option<&Path>) -> Router<S> {
    match dir {
        Some(dir) => Router::new().nest_service("/static", ServeDir::new(dir)),
        None => {
            warm();
            Router::new().route("/static/{*path}", get(embedded))
        }
    }
}

/// How a response body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Brotli,
}

impl Encoding {
    /// The `Content-Encoding` token, and the suffix that tells this
    /// representation's `ETag` from the others'.
    fn token(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
        }
    }
}

/// One embedded file, ready to answer.
struct File {
    content_type: HeaderValue,
    cache_control: HeaderValue,
    /// The first 16 hex digits of the file's SHA-256.
    hash: String,
    identity: Bytes,
    gzip: Option<Bytes>,
    brotli: Option<Bytes>,
}

impl File {
    fn from_embedded(name: &str, file: rust_embed::EmbeddedFile) -> Self {
        let identity = match file.data {
            std::borrow::Cow::Borrowed(bytes) => Bytes::from_static(bytes),
            std::borrow::Cow::Owned(bytes) => Bytes::from(bytes),
        };
        let mime = file.metadata.mimetype();
        let textual = is_textual(mime);
        let content_type = if textual && !mime.contains("charset") {
            format!("{mime}; charset=utf-8")
        } else {
            mime.to_string()
        };
        let (gzip, brotli) = (
            worth_it(gzip(&identity), &identity),
            worth_it(brotli(&identity), &identity),
        );
        let cache_control = if name.starts_with("vendor/") {
            VENDOR_CACHE
        } else {
            APP_CACHE
        };
        Self {
            content_type: HeaderValue::from_str(&content_type)
                .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
            cache_control: HeaderValue::from_static(cache_control),
            hash: hex::encode(&file.metadata.sha256_hash()[..8]),
            identity,
            gzip,
            brotli,
        }
    }

    /// The strong validator of one representation: the content hash, plus
    /// the encoding for a compressed one (its bytes differ).
    fn etag(&self, encoding: Encoding) -> String {
        match encoding {
            Encoding::Identity => format!("\"{}\"", self.hash),
            other => format!("\"{}-{}\"", self.hash, other.token()),
        }
    }

    fn body(&self, encoding: Encoding) -> Bytes {
        let variant = match encoding {
            Encoding::Identity => None,
            Encoding::Gzip => self.gzip.as_ref(),
            Encoding::Brotli => self.brotli.as_ref(),
        };
        variant.unwrap_or(&self.identity).clone()
    }

    fn has_variants(&self) -> bool {
        self.gzip.is_some() || self.brotli.is_some()
    }

    /// Whether `If-None-Match` names any representation of these bytes
    /// (a cache may hold the gzip one and now ask without gzip).
    fn matches(&self, if_none_match: &str) -> bool {
        let tags = [Encoding::Identity, Encoding::Gzip, Encoding::Brotli].map(|e| self.etag(e));
        if_none_match.split(',').map(str::trim).any(|candidate| {
            let candidate = candidate.strip_prefix("W/").unwrap_or(candidate);
            candidate == "*" || tags.iter().any(|tag| tag == candidate)
        })
    }
}

/// Every embedded file by its path under `static/`, compressed on first use.
static FILES: LazyLock<HashMap<String, File>> = LazyLock::new(|| {
    Embedded::iter()
        .filter_map(|name| {
            let file = Embedded::get(&name)?;
            let file = File::from_embedded(&name, file);
            Some((name.into_owned(), file))
        })
        .collect()
});

async fn embedded(UrlPath(path): UrlPath<String>, headers: HeaderMap) -> Response {
    let Some(file) = FILES.get(path.as_str()) else {
        return super::pages::not_found().await;
    };
    let encoding = negotiate(
        headers
            .get(ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        file.gzip.is_some(),
        file.brotli.is_some(),
    );
    let mut out = HeaderMap::new();
    out.insert(CONTENT_TYPE, file.content_type.clone());
    out.insert(CACHE_CONTROL, file.cache_control.clone());
    if let Ok(etag) = HeaderValue::from_str(&file.etag(encoding)) {
        out.insert(ETAG, etag);
    }
    if file.has_variants() {
        out.insert(VARY, HeaderValue::from_static("accept-encoding"));
    }
    let revalidated = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| file.matches(tags));
    if revalidated {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    if encoding != Encoding::Identity {
        out.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding.token()));
    }
    (out, file.body(encoding)).into_response()
}

/// The encoding to answer a request whose `Accept-Encoding` is `accept`
/// with: the available one the client rates highest (RFC 9110 §12.5.3),
/// brotli before gzip on a tie, identity when it accepts neither.
fn negotiate(accept: &str, has_gzip: bool, has_brotli: bool) -> Encoding {
    let mut gzip = None;
    let mut brotli = None;
    let mut any = None;
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .map_or(Some(1.0), |q| q.parse::<f32>().ok())
            .unwrap_or(0.0);
        match coding.as_str() {
            "gzip" | "x-gzip" => gzip = Some(q),
            "br" => brotli = Some(q),
            "*" => any = Some(q),
            _ => {}
        }
    }
    let brotli = if has_brotli { brotli.or(any) } else { None }.unwrap_or(0.0);
    let gzip = if has_gzip { gzip.or(any) } else { None }.unwrap_or(0.0);
    if brotli > 0.0 && brotli >= gzip {
        Encoding::Brotli
    } else if gzip > 0.0 {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

/// Text, scripts, styles, JSON, SVG: what a browser reads as UTF-8.
fn is_textual(mime: &str) -> bool {
    mime.starts_with("text/")
        || matches!(
            mime,
            "application/javascript" | "application/json" | "image/svg+xml" | "application/xml"
        )
}

/// `variant` when it saves a tenth of `identity` or more (images and other
/// compressed formats do not, and are then always sent as they are).
fn worth_it(variant: Option<Vec<u8>>, identity: &[u8]) -> Option<Bytes> {
    variant
        .filter(|v| v.len() * 10 <= identity.len() * 9)
        .map(Bytes::from)
}

fn gzip(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).ok()?;
    encoder.finish().ok()
}

fn brotli(bytes: &[u8]) -> Option<Vec<u8>> {
    // 9, not 11: within a few per cent of the size at a tenth of the time.
    let params = brotli::enc::BrotliEncoderParams {
        quality: 9,
        ..Default::default()
    };
    let mut out = Vec::new();
    brotli::BrotliCompress(&mut &bytes[..], &mut out, &params).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_clients_ratings() {
        use Encoding::*;
        for (accept, expected) in [
            ("", Identity),
            ("identity", Identity),
            ("deflate", Identity),
            ("gzip", Gzip),
            ("x-gzip", Gzip),
            ("gzip, deflate, br", Brotli),
            ("br;q=0.5, gzip", Gzip),
            ("br;q=1.0, gzip;q=1.0", Brotli),
            ("GZIP;Q=0.8", Gzip),
            ("br;q=0, gzip;q=0", Identity),
            ("*", Brotli),
            ("*;q=0.1, gzip", Gzip),
            ("br;q=nonsense, gzip", Gzip),
        ] {
            assert_eq!(negotiate(accept, true, true), expected, "{accept:?}");
        }
        assert_eq!(negotiate("br", true, false), Identity, "no brotli variant");
        assert_eq!(negotiate("gzip, br", true, false), Gzip);
        assert_eq!(negotiate("gzip, br", false, false), Identity);
    }

    #[test]
    fn every_representations_tag_revalidates_and_no_other() {
        let file = &FILES["app.css"];
        for encoding in [Encoding::Identity, Encoding::Gzip, Encoding::Brotli] {
            let tag = file.etag(encoding);
            assert!(file.matches(&tag), "{tag}");
            assert!(file.matches(&format!("\"other\", W/{tag}")), "{tag}");
        }
        assert!(file.matches("*"));
        assert!(!file.matches("\"0000000000000000\""));
        assert!(!file.matches(""));
        assert!(!FILES["run.js"].matches(&file.etag(Encoding::Identity)));
    }

    #[test]
    fn variants_decompress_to_the_file() {
        let file = &FILES["vendor/uplot-1.6.32/uPlot.iife.min.js"];
        let gz = file.gzip.as_ref().expect("a gzip variant");
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain)
            .expect("gunzip");
        assert_eq!(plain, file.identity);
        let br = file.brotli.as_ref().expect("a brotli variant");
        let mut plain = Vec::new();
        brotli::BrotliDecompress(&mut &br[..], &mut plain).expect("unbrotli");
        assert_eq!(plain, file.identity);
        assert!(br.len() < gz.len(), "brotli {} gzip {}", br.len(), gz.len());
        // Random bytes do not compress: no variant to offer.
        let noise: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
        assert!(worth_it(gzip(&noise), &noise).is_none());
    }
}
