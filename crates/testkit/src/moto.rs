//! moto on a free loopback port, through `tests/moto/server.py` (moto with
//! the gaps our templates meet closed), stopped when dropped. The pinned
//! moto comes from `.ci/tools.sh` (`MOTO_SERVER` names its server script).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python of the pinned moto's venv.
fn python() -> PathBuf {
    let python = crate::service::moto_python();
    assert!(
        python.exists(),
        "moto is not installed: run `source .ci/tools.sh` (or set MOTO_SERVER)"
    );
    python
}

pub fn start() -> Moto {
    start_with_env(&[])
}

/// moto with extra environment variables (the fault injections of
/// `tests/moto/server.py`, such as `PIPELINE_MOTO_FAIL`).
pub fn start_with_env(env: &[(&str, &str)]) -> Moto {
    let server = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join("tests/moto/server.py"))
        .find(|p| p.is_file())
        .expect("tests/moto/server.py");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let child = Command::new(python())
        .arg(server)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}
