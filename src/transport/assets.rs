//! The web app embedded at build time (see `build.rs`): each file with its
//! ETag, content type and gzip variant.

/// One embedded file.
#[derive(Debug)]
pub(crate) struct Asset {
    /// The URL path, from `/`.
    pub path: &'static str,
    pub body: &'static [u8],
    /// The same bytes gzip-compressed, when that is smaller.
    pub gzip: Option<&'static [u8]>,
    /// A strong ETag (quoted).
    pub etag: &'static str,
    pub content_type: &'static str,
    /// Named by its content (under `assets/`): cached for a year.
    pub immutable: bool,
}

/// The pages' Content-Security-Policy: the host's own origin only, and the
/// inline script and style of `index.html` by their SHA-256 (see build.rs).
pub(crate) const CSP: &str = include!(concat!(env!("OUT_DIR"), "/csp.rs"));

/// Every embedded file.
pub(crate) static ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The file for a URL path; `/` is `/index.html`.
pub(crate) fn find(path: &str) -> Option<&'static Asset> {
    let path = if path == "/" { "/index.html" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_index_page_is_always_embedded() {
        let index = super::find("/").expect("index.html");
        assert!(index.content_type.starts_with("text/html"));
        assert!(!index.immutable);
        assert_eq!(index.etag.len(), 26);
    }
}
