//! The web assets this service serves: the GraphQL IDE (`GET /graphql`, `/graphql/ide/*`) and
//! the storefront (every other `GET`), both built by `web/` (`scripts/web.sh build`) into
//! `WEB_DIR`.
//!
//! Why here and not a separate server: the gateway already routes `/graphql` to this service,
//! the IDE must come from the same image as the API it documents, and the storefront is a
//! handful of static files that talk only to this service's GraphQL and the user service's
//! login (both behind the same gateway origin). One more Deployment would buy nothing.
//!
//! The files are read once at start-up into memory (the whole folder is a few MB), so a
//! request never touches the disk and a half-written rebuild is never served. A file `X` with
//! a sibling `X.gz` (written by the build) is answered gzip-compressed to clients that accept
//! it.

use std::{
    collections::HashMap,
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};

/// Largest file loaded; anything bigger in `WEB_DIR` is a mistake, not an asset.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// One file, ready to answer.
#[derive(Debug, Clone)]
struct Asset {
    body: axum::body::Bytes,
    gzip: Option<axum::body::Bytes>,
    content_type: &'static str,
}

/// The loaded folder: relative path (with `/` separators) → file.
#[derive(Debug, Clone, Default)]
pub struct WebAssets {
    root: PathBuf,
    files: Arc<HashMap<String, Asset>>,
}

impl WebAssets {
    /// Loads every file under `root`. A missing folder is not an error (the API works without
    /// a page); the IDE and the storefront then answer 503 with what to run.
    pub fn load(root: &Path) -> Self {
        let mut raw = HashMap::new();
        if let Err(e) = walk(root, root, &mut raw) {
            tracing::warn!(dir = %root.display(), error = %e, "web assets not loaded (run scripts/web.sh build)");
        }
        let mut files = HashMap::new();
        for (rel, body) in &raw {
            if rel.ends_with(".gz") {
                continue;
            }
            let gzip = raw.get(&format!("{rel}.gz")).cloned();
            files.insert(
                rel.clone(),
                Asset {
                    body: body.clone(),
                    gzip,
                    content_type: content_type(rel),
                },
            );
        }
        tracing::info!(dir = %root.display(), files = files.len(), "web assets loaded");
        Self {
            root: root.to_owned(),
            files: Arc::new(files),
        }
    }

    /// Whether a file is there (tests, readiness of the page).
    pub fn contains(&self, rel: &str) -> bool {
        self.files.contains_key(rel)
    }

    fn answer(&self, rel: &str, headers: &HeaderMap) -> Option<Response> {
        let asset = self.files.get(rel)?;
        let (body, gzipped) = match (&asset.gzip, accepts_gzip(headers)) {
            (Some(gz), true) => (gz.clone(), true),
            _ => (asset.body.clone(), false),
        };
        let mut resp = Response::new(Body::from(body));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control(rel)),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if asset.gzip.is_some() {
            h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        if gzipped {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        if asset.content_type.starts_with("text/html") {
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            );
            h.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            );
        }
        Some(resp)
    }

    fn missing(&self, what: &str) -> Response {
        let body = format!(
            "<!doctype html><title>MovieBook</title><p>The {what} is not installed: \
             {} holds no build. Run <code>scripts/web.sh build</code> (or set WEB_DIR).</p>",
            html_escape(&self.root.display().to_string())
        );
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

/// The pages' Content-Security-Policy: everything from this origin only (no CDN can sneak
/// back in; CSP 3's `'self'` covers this origin's WebSocket for the live seat map), inline
/// styles for GraphiQL's editor and `data:` images for the QR code.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'self'";

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut HashMap<String, axum::body::Bytes>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_file() && entry.metadata()?.len() <= MAX_FILE_BYTES {
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let rel: Vec<String> = rel
                .components()
                .filter_map(|c| match c {
                    Component::Normal(s) => s.to_str().map(str::to_owned),
                    _ => None,
                })
                .collect();
            out.insert(
                rel.join("/"),
                axum::body::Bytes::from(std::fs::read(&path)?),
            );
        }
    }
    Ok(())
}

/// The asset a request path names: `/` is the storefront's `index.html`; anything with an
/// empty, `.` or `..` segment or a backslash names nothing (the map is the only lookup, so
/// this is about clear 404s, not about reaching outside the folder).
pub fn asset_path(path: &str) -> Option<String> {
    let trimmed = path.trim_start_matches('/');
    if trimmed.is_empty() {
        return Some("index.html".into());
    }
    let ok = trimmed
        .split('/')
        .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.contains('\\'));
    ok.then(|| trimmed.to_owned())
}

/// Content type by extension (the build emits only these).
pub fn content_type(rel: &str) -> &'static str {
    match rel.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("webmanifest") => "application/manifest+json",
        Some("txt") => "text/plain; charset=utf-8",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// Vite names everything under `assets/` after its content hash, so those never change;
/// everything else (the HTML, the IDE's files) is revalidated.
pub fn cache_control(rel: &str) -> &'static str {
    if rel.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    }
}

/// Whether `Accept-Encoding` allows gzip (`gzip;q=0` refuses it).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let q_zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !q_zero
        })
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `GET /graphql`: the IDE's page.
pub async fn ide(State(web): State<WebAssets>, headers: HeaderMap) -> Response {
    web.answer("ide/index.html", &headers)
        .unwrap_or_else(|| web.missing("GraphQL IDE"))
}

/// `GET /graphql/ide/{*file}`: the IDE's scripts and styles.
pub async fn ide_asset(
    State(web): State<WebAssets>,
    axum::extract::Path(file): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    asset_path(&file)
        .and_then(|rel| web.answer(&format!("ide/{rel}"), &headers))
        .unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

/// Every other `GET`: the storefront's files (`/` is its page; it routes with `#/…`, so no
/// other path needs to fall back to it).
pub async fn storefront(State(web): State<WebAssets>, uri: Uri, headers: HeaderMap) -> Response {
    match asset_path(uri.path()) {
        Some(rel) if rel == "index.html" && !web.contains(&rel) => web.missing("storefront"),
        Some(rel) => web
            .answer(&rel, &headers)
            .unwrap_or_else(|| StatusCode::NOT_FOUND.into_response()),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_files_inside_the_folder_only() {
        assert_eq!(asset_path("/").as_deref(), Some("index.html"));
        assert_eq!(
            asset_path("/assets/app-1a2b.js").as_deref(),
            Some("assets/app-1a2b.js")
        );
        for bad in ["/../etc/passwd", "/a/../b", "/a//b", "/./x", "/a\\b", "/a/"] {
            assert_eq!(asset_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn hashed_assets_are_immutable_and_pages_revalidate() {
        assert!(cache_control("assets/index-abc.js").contains("immutable"));
        assert_eq!(cache_control("index.html"), "no-cache");
        assert_eq!(cache_control("ide/graphiql.min.js"), "no-cache");
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("a/b.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("x.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }

    #[test]
    fn gzip_negotiation() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(accepts_gzip(&h("gzip, deflate, br")));
        assert!(accepts_gzip(&h("br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(&h("*")));
        assert!(!accepts_gzip(&h("gzip;q=0")));
        assert!(!accepts_gzip(&h("br, deflate")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn loads_a_folder_and_prefers_its_gzip_sibling() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("ide")).unwrap();
        std::fs::write(dir.path().join("index.html"), "<p>shop</p>").unwrap();
        std::fs::write(dir.path().join("ide/index.html"), "<p>ide</p>").unwrap();
        std::fs::write(dir.path().join("ide/index.html.gz"), "gz").unwrap();
        let web = WebAssets::load(dir.path());
        assert!(web.contains("index.html") && web.contains("ide/index.html"));
        assert!(!web.contains("ide/index.html.gz"));
        let mut gz = HeaderMap::new();
        gz.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        let resp = web.answer("ide/index.html", &gz).unwrap();
        assert_eq!(resp.headers()[header::CONTENT_ENCODING], "gzip");
        let resp = web.answer("ide/index.html", &HeaderMap::new()).unwrap();
        assert!(resp.headers().get(header::CONTENT_ENCODING).is_none());
        assert!(resp.headers().contains_key(header::CONTENT_SECURITY_POLICY));
    }
}
