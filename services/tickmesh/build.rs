//! Embeds the dashboard's built files (`web/dist` at the repository root, committed; the test
//! command rebuilds them from `web/src` and fails when they differ) into the binary, so
//! `tickmesh up` serves the page on a machine with only Rust installed. Writes
//! `$OUT_DIR/web_assets.rs`: one `Asset` per file, with `include_bytes!`.

use std::path::{Path, PathBuf};

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        "map" => "application/json",
        _ => "application/octet-stream",
    }
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, files);
        } else {
            files.push(path);
        }
    }
}

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let dist = manifest.join("../../web/dist");
    // Relative to this package, and the files below named from the crate's own
    // CARGO_MANIFEST_DIR: a target directory shared by two clones (the CI's and a working
    // copy) then never embeds or watches the other clone's files.
    println!("cargo:rerun-if-changed=../../web/dist");
    let mut files = Vec::new();
    walk(&dist, &mut files);
    files.sort();
    let mut out = String::from(
        "/// The dashboard's files, from web/dist (empty when it was not built).\n\
         pub static ASSETS: &[tickmesh_mesh::server::web::Asset] = &[\n",
    );
    for file in &files {
        // Vite's manifest describes the build for the budget check; the page does not need it.
        if file.components().any(|c| c.as_os_str() == ".vite") {
            continue;
        }
        let relative = file.strip_prefix(&dist).expect("walked under dist");
        let url: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        out.push_str(&format!(
            "    tickmesh_mesh::server::web::Asset {{ path: {:?}, content_type: {:?}, body: include_bytes!(concat!(env!(\"CARGO_MANIFEST_DIR\"), {:?})) }},\n",
            format!("/{}", url.join("/")),
            content_type(file),
            format!("/../../web/dist/{}", url.join("/")),
        ));
    }
    out.push_str("];\n");
    let target =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("web_assets.rs");
    std::fs::write(target, out).expect("OUT_DIR is writable");
}
