//! A throwaway PostgreSQL cluster for tests: `initdb` in a temporary directory, `pg_ctl start`
//! on a free loopback port, `trust` authentication for the superuser `postgres`.
//!
//! Shared by the crate's own recorder tests (`src/recorder/sql/tests/postgres.rs`) and the
//! integration tests (`tests/postgres_gateway.rs` includes this file with `#[path]`), so it
//! depends only on `std`, `tempfile` and `sqlx`.
//!
//! The server binaries (`initdb`, `pg_ctl`, `postgres`) are found in `$AIBRIDGE_TEST_PG_BIN`,
//! the newest `/usr/lib/postgresql/<version>/bin`, or on `PATH` (Debian/Ubuntu:
//! `apt-get install -y postgresql`). Without them the tests fail; they never pass silently.
//! Running as root, the server runs as the `postgres` user (initdb and postgres refuse
//! root).
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const MISSING: &str = "PostgreSQL server binaries (initdb, pg_ctl) not found in \
    $AIBRIDGE_TEST_PG_BIN, /usr/lib/postgresql/*/bin or PATH: install the `postgresql` \
    package (Debian/Ubuntu: `apt-get install -y postgresql`) to run the PostgreSQL tests";

/// A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 on a free port
/// with `trust` authentication for the superuser `postgres`. Stopped (immediate mode) and
/// deleted on drop.
pub struct PgServer {
    /// The directory holding `initdb`, `pg_ctl` and `psql`.
    pub bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// The TCP port on 127.0.0.1 (kept across [`stop`](Self::stop) and
    /// [`start_again`](Self::start_again)).
    pub port: u16,
    /// Running as root: initdb and postgres refuse that, so they run as `postgres`.
    as_postgres: bool,
    // Dropped after `Drop::drop` has stopped the server.
    dir: tempfile::TempDir,
}

impl PgServer {
    /// Creates and starts a new cluster.
    pub fn start() -> Self {
        let bin = find_bin();
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("aibridge-pg-")
            .tempdir()
            .unwrap();
        if as_postgres {
            let uid = id_of("-u");
            let gid = id_of("-g");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        let out = command(as_postgres, &bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let log = dir.path().join("server.log");
        let mut server = Self {
            bin,
            data,
            log,
            port: 0,
            as_postgres,
            dir,
        };
        for attempt in 1..=5 {
            server.port = free_port();
            if server.pg_ctl_start() {
                return server;
            }
            let log_text = std::fs::read_to_string(&server.log).unwrap_or_default();
            // Another process may have taken the port between probe and start: retry.
            if attempt == 5 || !log_text.contains("could not bind") {
                panic!("pg_ctl start failed:\n{log_text}");
            }
        }
        unreachable!()
    }

    /// `pg_ctl start` on `self.port`, waiting until the server accepts connections.
    fn pg_ctl_start(&self) -> bool {
        command(self.as_postgres, &self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c max_connections=200",
                self.port,
                self.dir.path().display()
            ))
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// Stops the server in `fast` mode (sessions are terminated, nothing is lost) and
    /// waits until it is down. Nothing listens on the port until
    /// [`start_again`](Self::start_again).
    pub fn stop(&self) {
        let status = command(self.as_postgres, &self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "pg_ctl stop failed ({status}):\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Starts the stopped server again, on the same port and with the same data.
    pub fn start_again(&self) {
        assert!(
            self.pg_ctl_start(),
            "pg_ctl start (again) failed:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// The process id of the running server (its postmaster), from `postmaster.pid`.
    pub fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// The URL of a database of this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .unwrap();
        sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        conn.close().await.unwrap();
        self.url(name)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = command(self.as_postgres, &self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The directory holding `initdb` and `pg_ctl`: `$AIBRIDGE_TEST_PG_BIN`, the newest
/// `/usr/lib/postgresql/<version>/bin`, or a `PATH` entry.
fn find_bin() -> PathBuf {
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("AIBRIDGE_TEST_PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            has_tools(&dir),
            "{MISSING} (AIBRIDGE_TEST_PG_BIN={})",
            dir.display()
        );
        return dir;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).find(|d| has_tools(d)))
        .unwrap_or_else(|| panic!("{MISSING}"))
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// `id -u postgres` / `id -g postgres`.
fn id_of(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "running as root, but there is no `postgres` user to run the server as \
         (the `postgresql` package creates it)"
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// `program`, run as the `postgres` user when `as_postgres`.
fn command(as_postgres: bool, program: &Path) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
