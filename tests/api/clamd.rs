//! ClamAV's daemon, started by the test with a signature database of one signature (the EICAR test
//! file's), so the upload scan runs against the real scanner with nothing downloaded. Where no
//! `clamd` is installed the scan scenarios say so and pass without running, unless
//! `TEST_REQUIRE_CLAMD` is set (CI sets it, after installing Debian's clamav-daemon).

use std::io::Write;
use std::process::{Child, Command, Stdio};

/// The EICAR anti-virus test file, put together here so this source is not itself flagged.
pub fn eicar() -> Vec<u8> {
    [r"X5O!P%@AP[4\PZX54(P^)7CC)7}$", "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"].concat().into_bytes()
}

pub const SIGNATURE: &str = "Eicar-Test-Signature";

pub struct Clamd {
    pub addr: String,
    process: Child,
    folder: std::path::PathBuf,
}

impl Clamd {
    /// A clamd on a free port of 127.0.0.1 that takes streams of up to `max_stream_bytes`, until
    /// dropped; `None` (with a notice) where clamd is not installed.
    pub fn start(max_stream_bytes: u64) -> Option<Self> {
        let Some(binary) = find_clamd() else {
            assert!(
                std::env::var_os("TEST_REQUIRE_CLAMD").is_none(),
                "TEST_REQUIRE_CLAMD is set but no clamd was found (install clamav-daemon)"
            );
            let _ = writeln!(
                std::io::stderr(),
                "\nNOTICE: clamd is not installed: the malware-scan scenarios are SKIPPED (they pass \
                 without running). Install Debian's clamav-daemon to run them.\n"
            );
            return None;
        };
        let folder = std::env::temp_dir()
            .join("ticketdesk-tests")
            .join(format!("clamd-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(folder.join("db")).unwrap();
        let hex: String = eicar().iter().map(|byte| format!("{byte:02x}")).collect();
        std::fs::write(folder.join("db/eicar.ndb"), format!("{SIGNATURE}:0:*:{hex}\n")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        std::fs::write(
            folder.join("clamd.conf"),
            format!(
                "DatabaseDirectory {db}\nTCPSocket {port}\nTCPAddr 127.0.0.1\nForeground yes\n\
                 StreamMaxLength {max_stream_bytes}\nLogFile {log}\n",
                db = folder.join("db").display(),
                log = folder.join("clamd.log").display(),
            ),
        )
        .unwrap();
        let process = Command::new(binary)
            .arg("-c")
            .arg(folder.join("clamd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting clamd");
        let clamd = Clamd { addr: format!("127.0.0.1:{port}"), process, folder };
        clamd.wait_until_listening();
        Some(clamd)
    }

    /// The settings that make the server scan uploads here.
    pub fn settings(&self) -> [(&str, &str); 1] {
        [("CLAMD_ADDR", self.addr.as_str())]
    }

    fn wait_until_listening(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(&self.addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "clamd did not listen within 30 s: {}",
                std::fs::read_to_string(self.folder.join("clamd.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

fn find_clamd() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|folder| folder.join("clamd"))
        .find(|binary| binary.is_file())
}

impl Drop for Clamd {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}
