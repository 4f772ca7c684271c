//! The suite and the bench from nothing but cargo: when no instances are named, the harness builds
//! the service itself (in its own profile) and starts the project-local PostgreSQL the way the
//! service does (`home-visits db start`).
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::process::Command;

/// The instances a self-contained run starts.
pub const DEFAULT_INSTANCES: [&str; 2] = ["http://127.0.0.1:14001", "http://127.0.0.1:14002"];

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Builds `home-visits` in the harness's own profile (a release harness measures a release
/// service); returns the binary.
pub async fn build_service() -> anyhow::Result<PathBuf> {
    let release = !cfg!(debug_assertions);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = workspace_root();
    let mut build = Command::new(cargo);
    build
        .current_dir(&root)
        .args(["build", "--bin", "home-visits"]);
    if release {
        build.arg("--release");
    }
    let status = build
        .status()
        .await
        .context("running cargo to build home-visits")?;
    anyhow::ensure!(status.success(), "building home-visits failed ({status})");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target
        .join(if release { "release" } else { "debug" })
        .join("home-visits"))
}

/// Starts (or finds running) the local cluster; returns the URL of database `name` on it.
pub async fn local_database(binary: &Path, name: &str) -> anyhow::Result<String> {
    let output = Command::new(binary)
        .args(["db", "start"])
        .current_dir(workspace_root())
        .output()
        .await
        .with_context(|| format!("running {} db start", binary.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} db start failed: {}",
        binary.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let url = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with("postgres"))
        .context("`home-visits db start` printed no URL")?;
    let (server, _) = url
        .rsplit_once('/')
        .context("`home-visits db start` printed a URL without a database")?;
    Ok(format!("{server}/{name}"))
}
