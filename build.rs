//! Embeds the web app: writes a table of the files in `web/dist/` (or, when
//! that holds no `index.html`, `web/placeholder/`) with their ETags and gzip
//! variants, for `transport::assets` to include.

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
