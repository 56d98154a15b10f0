//! Python peers (PyPI packages in tests/peers/requirements.txt), installed
//! by scripts/test.sh into `target/peers-venv`.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use super::repo;

/// The peers' Python, or a loud failure with the command that installs it.
pub fn python(module: &str) -> PathBuf {
    let venv = std::env::var_os("CROSSLINE_PEERS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/peers-venv"));
    let python = venv.join("bin/python");
    let found = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "Python module `{module}` is missing from {}: install it with \
         `python3 -m venv {0} && {0}/bin/pip install -r tests/peers/requirements.txt` \
         (scripts/test.sh does this)",
        venv.display()
    );
    python
}

/// Run a script from tests/peers with the peers' Python, killing it after
/// `limit`.
pub fn run_script(module: &str, script: &str, args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(python(module))
        .arg(repo().join("tests/peers").join(script))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the Python peer");
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().expect("poll the Python peer").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
        .wait_with_output()
        .expect("collect the Python peer's output")
}
