//! Embeds the web app: writes a table of the files in `web/dist/` (or, when
//! that holds no `index.html`, `web/placeholder/`) with their ETags and gzip
//! variants, and the pages' Content-Security-Policy (allowing the inline
//! scripts and styles of `index.html` by their SHA-256), for
//! `transport::assets` to include.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    println!("cargo:rerun-if-changed=web/dist");
    println!("cargo:rerun-if-changed=web/placeholder");
    let dist = root.join("web/dist");
    let dir = if dist.join("index.html").is_file() {
        dist
    } else {
        root.join("web/placeholder")
    };
    let mut files = Vec::new();
    walk(&dir, &mut files);
    files.sort();
    let gz_dir = out.join("assets-gz");
    std::fs::create_dir_all(&gz_dir).expect("OUT_DIR is writable");
    let mut table = String::from("&[\n");
    for (n, file) in files.iter().enumerate() {
        println!("cargo:rerun-if-changed={}", file.display());
        let rel = file
            .strip_prefix(&dir)
            .expect("walked under dir")
            .to_string_lossy()
            .replace('\\', "/");
        let body = std::fs::read(file).expect("readable asset");
        let etag = format!("\"{}\"", hex(&Sha256::digest(&body)[..12]));
        let given = PathBuf::from(format!("{}.gz", file.display()));
        let gzip = if given.is_file() {
            println!("cargo:rerun-if-changed={}", given.display());
            Some(given)
        } else if compressible(&rel) && body.len() > 256 {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            enc.write_all(&body).expect("in memory");
            let packed = enc.finish().expect("in memory");
            (packed.len() < body.len()).then(|| {
                let path = gz_dir.join(format!("{n}.gz"));
                std::fs::write(&path, packed).expect("OUT_DIR is writable");
                path
            })
        } else {
            None
        };
        table.push_str(&format!(
            "    Asset {{ path: {:?}, body: include_bytes!({:?}), gzip: {}, etag: {:?}, content_type: {:?}, immutable: {} }},\n",
            format!("/{rel}"),
            file.display().to_string(),
            gzip.map_or("None".to_owned(), |p| format!(
                "Some(include_bytes!({:?}))",
                p.display().to_string()
            )),
            etag,
            content_type(&rel),
            rel.starts_with("assets/"),
        ));
    }
    table.push_str("]\n");
    std::fs::write(out.join("assets.rs"), table).expect("OUT_DIR is writable");
    let index = std::fs::read_to_string(dir.join("index.html")).unwrap_or_default();
    let csp = format!(
        "default-src 'self'; script-src 'self'{}; connect-src 'self'; img-src 'self' data:; style-src 'self'{}; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        hashes(&index, "<script type=\"module\">", "</script>")
            + &hashes(&index, "<script>", "</script>"),
        hashes(&index, "<style>", "</style>"),
    );
    std::fs::write(out.join("csp.rs"), format!("{csp:?}\n")).expect("OUT_DIR is writable");
}

/// ` 'sha256-…'` for the text between each `open` and the next `close` in `html`.
fn hashes(html: &str, open: &str, close: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    while let Some(start) = rest.find(open) {
        let body = &rest[start + open.len()..];
        let Some(end) = body.find(close) else { break };
        out.push_str(&format!(
            " 'sha256-{}'",
            base64(&Sha256::digest(&body.as_bytes()[..end]))
        ));
        rest = &body[end + close.len()..];
    }
    out
}

/// Standard base64 with padding (what CSP hash sources take).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            walk(&path, files);
        } else if !name.ends_with(".gz") {
            files.push(path);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn compressible(path: &str) -> bool {
    !matches!(
        extension(path),
        "png" | "jpg" | "jpeg" | "gif" | "webp" | "woff" | "woff2" | "ico"
    )
}

fn extension(path: &str) -> &str {
    path.rsplit_once('.').map_or("", |(_, e)| e)
}

fn content_type(path: &str) -> &'static str {
    match extension(path) {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}
