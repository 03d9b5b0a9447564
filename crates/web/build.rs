//! Fetches the browser libraries from the npm registry at build time, so the served pages and the
//! HTML report work offline (no CDN) without committing third-party code: GraphiQL (with React)
//! for `/`, Chart.js and Cytoscape.js for the audit view.
//!
//! Order, per group: `IDGRAPH_WEB_ASSETS_DIR` (or the older `IDGRAPH_GRAPHIQL_DIR`; a folder
//! holding the files, for builders without npm or without the registry), then `npm pack` into
//! `OUT_DIR`. When neither works the build goes on: `/` serves a minimal query page and the audit
//! view draws plain HTML bars and lists instead of charts; the README says so.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Group {
    /// The cfg set when every file of the group is there.
    cfg: &'static str,
    packages: &'static [&'static str],
    /// (tarball, path inside it, file name)
    files: &'static [(&'static str, &'static str, &'static str)],
}

const GROUPS: [Group; 2] = [
    Group {
        cfg: "graphiql_bundled",
        packages: &["graphiql@3.8.3", "react@18.3.1", "react-dom@18.3.1"],
        files: &[
            ("graphiql-3.8.3.tgz", "package/graphiql.min.js", "graphiql.min.js"),
            ("graphiql-3.8.3.tgz", "package/graphiql.min.css", "graphiql.min.css"),
            ("react-18.3.1.tgz", "package/umd/react.production.min.js", "react.production.min.js"),
            ("react-dom-18.3.1.tgz", "package/umd/react-dom.production.min.js", "react-dom.production.min.js"),
        ],
    },
    Group {
        cfg: "charts_bundled",
        packages: &["chart.js@4.5.1", "cytoscape@3.35.0"],
        files: &[
            ("chart.js-4.5.1.tgz", "package/dist/chart.umd.min.js", "chart.umd.min.js"),
            ("cytoscape-3.35.0.tgz", "package/dist/cytoscape.min.js", "cytoscape.min.js"),
        ],
    },
];

fn have_all(dir: &Path, g: &Group) -> bool {
    g.files.iter().all(|(_, _, name)| dir.join(name).metadata().map(|m| m.len() > 0).unwrap_or(false))
}

fn fetch(dir: &Path, g: &Group) -> Result<(), String> {
    let work = dir.join(format!("pack-{}", g.cfg));
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let status = Command::new("npm")
        .arg("pack")
        .args(g.packages)
        .args(["--silent", "--pack-destination"])
        .arg(&work)
        .current_dir(&work)
        .status()
        .map_err(|e| format!("npm: {e}"))?;
    if !status.success() {
        return Err(format!("npm pack exited with {status}"));
    }
    for (tgz, inner, name) in g.files {
        let out = Command::new("tar")
            .arg("-xzOf")
            .arg(work.join(tgz))
            .arg(inner)
            .output()
            .map_err(|e| format!("tar: {e}"))?;
        if !out.status.success() || out.stdout.is_empty() {
            return Err(format!("{inner} not found in {tgz}"));
        }
        std::fs::write(dir.join(name), out.stdout).map_err(|e| e.to_string())?;
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=IDGRAPH_WEB_ASSETS_DIR");
    println!("cargo:rerun-if-env-changed=IDGRAPH_GRAPHIQL_DIR");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into())).join("web");
    let _ = std::fs::create_dir_all(&out);
    let given = std::env::var("IDGRAPH_WEB_ASSETS_DIR").or_else(|_| std::env::var("IDGRAPH_GRAPHIQL_DIR")).ok();
    for g in &GROUPS {
        println!("cargo::rustc-check-cfg=cfg({})", g.cfg);
        if let Some(src) = &given {
            for (_, _, name) in g.files {
                let _ = std::fs::copy(Path::new(src).join(name), out.join(name));
            }
        }
        if !have_all(&out, g) {
            if let Err(e) = fetch(&out, g) {
                println!("cargo:warning={} assets unavailable ({e}); serving a plain fallback instead", g.cfg);
            }
        }
        if have_all(&out, g) {
            println!("cargo:rustc-cfg={}", g.cfg);
        } else {
            for (_, _, name) in g.files {
                let _ = std::fs::write(out.join(name), b"");
            }
        }
    }
}
