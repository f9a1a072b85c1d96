//! The sample events' folder and configuration, as the event tests and the fuzz targets load
//! them.

use gatehouse::config::Vars;
use std::path::{Path, PathBuf};

/// The repository's `events/` folder.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

/// The configuration of `events/local.env`, with its secrets file found from anywhere and the
/// data kept in `data_dir`. Callers point the platforms where they serve them.
///
/// # Panics
/// If `events/local.env` cannot be read or has a line that is not `KEY=VALUE`.
pub fn local_vars(data_dir: &Path) -> Vars {
    let env = std::fs::read_to_string(dir().join("local.env")).expect("events/local.env");
    let mut vars = Vars::default();
    for line in env
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (k, v) = line.split_once('=').expect("KEY=VALUE");
        vars.set(k, v);
    }
    vars.set(
        "GATEHOUSE_SECRETS_FILE",
        dir().join("secrets.json").to_string_lossy(),
    );
    vars.set("GATEHOUSE_DATA_DIR", data_dir.to_string_lossy());
    vars
}
