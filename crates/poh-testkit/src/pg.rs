//! A throwaway PostgreSQL cluster for tests and benchmarks, started from the machine's
//! own server binaries: `initdb` into a temporary directory, `pg_ctl start` on a free
//! loopback port with password (SCRAM) authentication, stopped and removed on drop. No
//! external service or credentials are involved.
//!
//! The binaries are found through `POH_PG_BIN`, `pg_config --bindir`, or Debian's
//! `/usr/lib/postgresql/<version>/bin`. As root (CI), the server runs as the `postgres`
//! user (or `nobody`), since PostgreSQL refuses to run as root.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use tempfile::TempDir;

use crate::require::{check_command, euid, prerequisite};

/// Overrides where the PostgreSQL server binaries are.
pub const PG_BIN_ENV: &str = "POH_PG_BIN";

/// Extra `postgres` command-line settings for every test cluster (diagnosis only).
pub const SERVER_OPTS_ENV: &str = "POH_PG_SERVER_OPTS";

/// A file the server log goes to instead of the cluster's directory, kept after the test.
pub const SERVER_LOG_ENV: &str = "POH_PG_SERVER_LOG";

/// The role every test cluster is created with.
pub const USER: &str = "poh";

/// The directory holding `initdb`, `pg_ctl` and `postgres`, or why there is none (with
/// what to install). Checked once per process.
pub fn check_postgres() -> Result<PathBuf, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND.get_or_init(find_bin).clone()
}

fn find_bin() -> Result<PathBuf, String> {
    let has_all = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    if let Some(d) = std::env::var_os(PG_BIN_ENV) {
        let d = PathBuf::from(d);
        return if has_all(&d) {
            Ok(d)
        } else {
            Err(format!(
                "{PG_BIN_ENV}={} has no initdb, pg_ctl and postgres",
                d.display()
            ))
        };
    }
    if let Ok(out) = check_command("pg_config", &["--bindir"]) {
        let d = PathBuf::from(out.trim());
        if has_all(&d) {
            return Ok(d);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .find(|d| has_all(d))
        .ok_or_else(|| {
            "no PostgreSQL server binaries (initdb, pg_ctl): install Debian's `postgresql` \
         package, or set POH_PG_BIN"
                .to_owned()
        })
}

/// A throwaway cluster (see [`PgCluster::start`]), as a [`prerequisite`]: `None` after a
/// `SKIPPED` note when the binaries are missing; panics when they are missing under
/// `POH_REQUIRE_ALL=1` or when the cluster fails to start.
pub fn cluster() -> Option<PgCluster> {
    let bin = prerequisite("PostgreSQL server binaries", check_postgres())?;
    Some(PgCluster::start_with(&bin).unwrap_or_else(|e| panic!("start PostgreSQL: {e}")))
}

/// A running throwaway cluster; stopped and deleted on drop.
pub struct PgCluster {
    dir: TempDir,
    /// The data directory, when not `<dir>/data` (see [`PgCluster::start_at`]).
    data: Option<PathBuf>,
    bin: PathBuf,
    port: u16,
    password: String,
    run_as: Option<String>,
}

impl PgCluster {
    /// Initializes and starts a cluster from the binaries [`check_postgres`] finds.
    pub fn start() -> Result<Self, String> {
        Self::start_with(&check_postgres()?)
    }

    /// Initializes and starts a cluster from the binaries in `bin`.
    pub fn start_with(bin: &Path) -> Result<Self, String> {
        Self::start_in(bin, None)
    }

    /// Initializes and starts a cluster whose data directory is `data` (a directory to
    /// create, for example on a file system a test cuts power to); the rest (socket, log,
    /// password file) stays in a temporary directory.
    pub fn start_at(data: &Path) -> Result<Self, String> {
        Self::start_in(&check_postgres()?, Some(data.to_owned()))
    }

    fn start_in(bin: &Path, data: Option<PathBuf>) -> Result<Self, String> {
        let dir = TempDir::new().map_err(|e| format!("temp dir: {e}"))?;
        let run_as = if euid() == Some(0) {
            let user = ["postgres", "nobody"]
                .into_iter()
                .find(|u| check_command("id", &["-u", u]).is_ok())
                .ok_or(
                    "running as root and there is no postgres or nobody user to run the server as",
                )?;
            Some(user.to_owned())
        } else {
            None
        };
        let password = format!(
            "pw{}{}",
            std::process::id(),
            dir.path()
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().replace('.', ""))
        );
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n")).map_err(|e| format!("pwfile: {e}"))?;
        if let Some(d) = &data {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        if let Some(u) = &run_as {
            for path in std::iter::once(dir.path()).chain(data.as_deref()) {
                let out = Command::new("chown")
                    .args(["-R", &format!("{u}:"), &path.display().to_string()])
                    .output()
                    .map_err(|e| format!("chown: {e}"))?;
                ok(&out, "chown")?;
            }
        }
        let mut c = Self {
            dir,
            bin: bin.to_owned(),
            data,
            port: 0,
            password,
            run_as,
        };
        let data = c.data_dir();
        let out = c
            .command("initdb")
            .args(["-D", &data.display().to_string()])
            .args(["-U", USER, "-E", "UTF8", "--locale=C", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .map_err(|e| format!("run initdb: {e}"))?;
        ok(&out, "initdb")?;
        let mut last = String::new();
        for _ in 0..5 {
            c.port = free_port()?;
            match c.start_server() {
                Ok(()) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn data_dir(&self) -> PathBuf {
        self.data
            .clone()
            .unwrap_or_else(|| self.dir.path().join("data"))
    }

    /// Removes `postmaster.pid` and the socket's lock file left by a server the caller killed: its process may stay a
    /// zombie when nothing reaps it (a container whose init does not), and the server
    /// refuses to start while that pid exists.
    pub fn remove_stale_pid_file(&self) -> Result<(), String> {
        let socket_lock = self.dir.path().join(format!(".s.PGSQL.{}.lock", self.port));
        for f in [self.data_dir().join("postmaster.pid"), socket_lock] {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("remove {}: {e}", f.display())),
            }
        }
        Ok(())
    }

    /// The server's process id, from `postmaster.pid` (read while its file system works).
    pub fn server_pid(&self) -> Result<u32, String> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .map_err(|e| format!("postmaster.pid: {e}"))?;
        text.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("postmaster.pid: no pid in {text:?}"))
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.run_as {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    /// Starts the server (again) on the cluster's port, waiting until it accepts
    /// connections.
    pub fn start_server(&self) -> Result<(), String> {
        let mut opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c shared_buffers=128MB -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        // Diagnosis of a failing run: more server settings (say, `-c log_statement=all`).
        if let Ok(extra) = std::env::var(SERVER_OPTS_ENV) {
            opts.push(' ');
            opts.push_str(&extra);
        }
        let out = self
            .command("pg_ctl")
            .args(["-D", &self.data_dir().display().to_string()])
            .args(["-l", &self.log_path().display().to_string()])
            .args(["-w", "-t", "60", "-o", &opts, "start"])
            .output()
            .map_err(|e| format!("run pg_ctl start: {e}"))?;
        ok(&out, "pg_ctl start").map_err(|e| format!("{e}\nserver log:\n{}", self.log()))
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`: no
    /// checkpoint; the next start replays the WAL).
    pub fn stop_immediate(&self) -> Result<(), String> {
        let out = self
            .command("pg_ctl")
            .args(["-D", &self.data_dir().display().to_string()])
            .args(["-w", "-m", "immediate", "stop"])
            .output()
            .map_err(|e| format!("run pg_ctl stop: {e}"))?;
        ok(&out, "pg_ctl stop")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Where the server writes its log: in the cluster's directory, or (to keep it after
    /// the test) the file [`SERVER_LOG_ENV`] names, appended to.
    pub fn log_path(&self) -> PathBuf {
        std::env::var_os(SERVER_LOG_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| self.dir.path().join("server.log"))
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The password of [`USER`].
    pub fn password(&self) -> &str {
        &self.password
    }

    /// URL of database `db` as [`USER`], with the password.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{USER}:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// Creates database `name` (and returns its URL).
    pub fn create_db(&self, name: &str) -> Result<String, String> {
        let out = self
            .command("psql")
            .args(["-h", &self.dir.path().display().to_string()])
            .args(["-p", &self.port.to_string(), "-U", USER, "-d", "postgres"])
            .args(["-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("CREATE DATABASE \"{name}\""))
            .output()
            .map_err(|e| format!("run psql: {e}"))?;
        ok(&out, "create database")?;
        Ok(self.url(name))
    }

    /// Turns TLS on: makes a CA and a server certificate for `127.0.0.1` and `localhost`
    /// with `openssl`, installs them in the cluster and reloads it. Returns the CA
    /// certificate's path (for `sslrootcert=`).
    pub fn enable_tls(&self) -> Result<PathBuf, String> {
        let dir = self.dir.path().join("tls");
        std::fs::create_dir_all(&dir).map_err(|e| format!("tls dir: {e}"))?;
        let p = |n: &str| dir.join(n).display().to_string();
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .map_err(|e| format!("san.ext: {e}"))?;
        let steps: [Vec<String>; 3] = [
            [
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=poh test CA",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain(["-keyout".into(), p("ca.key"), "-out".into(), p("ca.pem")])
            .collect(),
            [
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([
                "-keyout".into(),
                p("server.key"),
                "-out".into(),
                p("server.csr"),
            ])
            .collect(),
            ["x509", "-req", "-days", "2", "-CAcreateserial"]
                .iter()
                .map(|s| s.to_string())
                .chain([
                    "-in".into(),
                    p("server.csr"),
                    "-CA".into(),
                    p("ca.pem"),
                    "-CAkey".into(),
                    p("ca.key"),
                    "-extfile".into(),
                    p("san.ext"),
                    "-out".into(),
                    p("server.crt"),
                ])
                .collect(),
        ];
        for args in steps {
            let out = Command::new("openssl")
                .args(&args)
                .output()
                .map_err(|e| format!("run openssl: {e}"))?;
            ok(&out, "openssl")?;
        }
        let data = self.data_dir();
        for f in ["server.crt", "server.key"] {
            std::fs::copy(dir.join(f), data.join(f)).map_err(|e| format!("copy {f}: {e}"))?;
        }
        if let Some(u) = &self.run_as {
            let out = Command::new("chown")
                .arg(format!("{u}:"))
                .arg(data.join("server.crt"))
                .arg(data.join("server.key"))
                .output()
                .map_err(|e| format!("chown: {e}"))?;
            ok(&out, "chown")?;
        }
        let out = Command::new("chmod")
            .arg("600")
            .arg(data.join("server.key"))
            .output()
            .map_err(|e| format!("chmod: {e}"))?;
        ok(&out, "chmod")?;
        self.psql("postgres", "ALTER SYSTEM SET ssl = on")?;
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        Ok(dir.join("ca.pem"))
    }

    /// Runs one SQL command in database `db` through `psql` (trusted local socket) and
    /// returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = self
            .command("psql")
            .args(["-h", &self.dir.path().display().to_string()])
            .args(["-p", &self.port.to_string(), "-U", USER, "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-X", "-A", "-t", "-c", sql])
            .output()
            .map_err(|e| format!("run psql: {e}"))?;
        ok(&out, "psql")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
    /// Starts `psql` on database `db` reading commands from a pipe: a session a test keeps
    /// open (a transaction holding locks) while the store works, fed with
    /// [`PsqlSession::send`].
    pub fn psql_session(&self, db: &str) -> Result<PsqlSession, String> {
        let child = self
            .command("psql")
            .args(["-h", &self.dir.path().display().to_string()])
            .args(["-p", &self.port.to_string(), "-U", USER, "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-X", "-A", "-t", "-q"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("run psql: {e}"))?;
        Ok(PsqlSession { child: Some(child) })
    }
}

/// A `psql` process fed one command at a time (see [`PgCluster::psql_session`]).
pub struct PsqlSession {
    child: Option<Child>,
}

impl PsqlSession {
    /// Sends `sql` (one or more commands, each ending in `;`); psql runs it as soon as it
    /// reads it.
    pub fn send(&mut self, sql: &str) -> Result<(), String> {
        let stdin = self
            .child
            .as_mut()
            .and_then(|c| c.stdin.as_mut())
            .ok_or("psql has no stdin")?;
        writeln!(stdin, "{sql}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("write to psql: {e}"))
    }

    /// Closes psql's input and waits for it; an error if any command failed.
    pub fn finish(mut self) -> Result<String, String> {
        let mut child = self.child.take().ok_or("psql already finished")?;
        drop(child.stdin.take());
        let out = child
            .wait_with_output()
            .map_err(|e| format!("wait for psql: {e}"))?;
        ok(&out, "psql session")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for PsqlSession {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.stop_immediate();
    }
}

fn ok(out: &Output, what: &str) -> Result<(), String> {
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("find a free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("find a free port: {e}"))
}
