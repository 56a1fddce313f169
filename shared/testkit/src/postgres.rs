//! A throwaway PostgreSQL server.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{self, Launcher};
use crate::{Error, Result, find_binary, free_port};

/// The role that owns the cluster and the database the tests use.
const USER: &str = "tickmesh";
/// The database created for the tests.
const DATABASE: &str = "tickmesh";
/// How long a server may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a fresh port is tried when another process took the one we picked.
const PORT_ATTEMPTS: usize = 5;
const HINT: &str = "install it with `apt-get install postgresql`";

/// A PostgreSQL server with its own data directory and port, killed and removed on drop.
#[derive(Debug)]
pub struct Postgres {
    bins: Bins,
    launcher: Launcher,
    port: u16,
    child: Option<Child>,
    // Last, so the directory is removed only after Drop stopped the server.
    dir: TempDir,
}

#[derive(Debug)]
struct Bins {
    initdb: PathBuf,
    postgres: PathBuf,
    psql: PathBuf,
}

impl Bins {
    /// Finds initdb in PATH or the newest /usr/lib/postgresql/*/bin, and its siblings next to it,
    /// so all programs come from one PostgreSQL version.
    fn find() -> Result<Self> {
        let versioned = versioned_dirs();
        let initdb = find_binary("initdb", &versioned, HINT)?;
        let home = std::fs::canonicalize(&initdb)
            .ok()
            .and_then(|path| path.parent().map(Path::to_path_buf));
        let sibling = |name: &str| -> Result<PathBuf> {
            match &home {
                Some(home) if crate::is_executable(&home.join(name)) => Ok(home.join(name)),
                _ => find_binary(name, &versioned, HINT),
            }
        };
        Ok(Bins {
            postgres: sibling("postgres")?,
            psql: sibling("psql")?,
            initdb,
        })
    }
}

/// `/usr/lib/postgresql/<version>/bin`, newest version first.
fn versioned_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
                .ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

impl Postgres {
    /// Initialises a fresh cluster in a temporary directory, starts it and creates database `tickmesh`.
    pub fn start() -> Result<Self> {
        let bins = Bins::find()?;
        let launcher = Launcher::unprivileged()?;
        let dir = tempfile::Builder::new()
            .prefix("tickmesh-pg-")
            .tempdir()
            .map_err(Error::io("creating a temporary directory for postgres"))?;
        let pg = Postgres {
            bins,
            launcher,
            port: 0,
            child: None,
            dir,
        };
        std::fs::create_dir(pg.socket_dir())
            .map_err(Error::io("creating the postgres socket directory"))?;
        pg.launcher.hand_over(pg.dir.path())?;
        pg.launcher.hand_over(&pg.socket_dir())?;
        process::run(
            pg.launcher
                .command(&pg.bins.initdb)
                .arg("-D")
                .arg(pg.data_dir())
                .args(["-A", "trust", "-U", USER, "--no-sync", "-E", "UTF8"])
                .arg("--locale=C")
                .current_dir(pg.dir.path()),
        )?;
        pg.start_on_a_free_port()
    }

    fn start_on_a_free_port(mut self) -> Result<Self> {
        for attempt in 1..=PORT_ATTEMPTS {
            self.port = free_port();
            match self.launch() {
                Ok(()) => break,
                Err(Error::Exited { ref log, .. })
                    if attempt < PORT_ATTEMPTS && log.contains("already in use") => {}
                Err(err) => return Err(err),
            }
        }
        self.run_psql("postgres", &format!("create database {DATABASE}"))?;
        Ok(self)
    }

    /// The port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://tickmesh@127.0.0.1:PORT/tickmesh` (trust authentication, no password).
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The temporary directory holding the data directory, the socket and the log; removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The cluster's data directory (inside [`Postgres::dir`]).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log file (stdout and stderr of every start).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The postmaster's pid while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|child| self.server_pid(child))
    }

    /// Runs `sql` with `psql -X -A -t -q -v ON_ERROR_STOP=1` in database `tickmesh`; stdout, trimmed.
    ///
    /// `-q` keeps command tags such as `INSERT 0 1` out of the output, so it is only the rows.
    pub fn psql(&self, sql: &str) -> Result<String> {
        self.run_psql(DATABASE, sql)
    }

    /// Stops the server with a fast shutdown (SIGINT), keeping the data directory.
    ///
    /// Escalates to SIGQUIT and SIGKILL if it does not exit in time; the process is always reaped.
    pub fn stop(&mut self) {
        self.shut_down(&[
            ("INT", Duration::from_secs(30)),
            ("QUIT", Duration::from_secs(5)),
        ]);
    }

    /// Stops the server if it runs, and starts it again on the same port and data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch()
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn server_pid(&self, child: &Child) -> u32 {
        if self.launcher.execs() {
            return child.id();
        }
        // The child is `runuser`; the postmaster records its own pid on the first line.
        std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse().ok())
            .unwrap_or_else(|| child.id())
    }

    fn shut_down(&mut self, steps: &[(&str, Duration)]) {
        if let Some(child) = self.child.take() {
            let pid = self.server_pid(&child);
            process::shut_down(child, pid, steps);
        }
    }

    /// Spawns the postmaster on `self.port` and waits until it serves our data directory.
    fn launch(&mut self) -> Result<()> {
        let log_path = self.log_path();
        let offset = process::log_len(&log_path);
        let (stdout, stderr) = process::log_stdio(&log_path)?;
        let child = self
            .launcher
            .command(&self.bins.postgres)
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.socket_dir())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(Error::io("spawning postgres"))?;
        self.child = Some(child);

        let started = Instant::now();
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(Error::Exited {
                    server: "postgres",
                    status,
                    log: process::log_tail(&log_path, offset),
                });
            }
            if self.serves_our_data_dir() {
                return Ok(());
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                self.shut_down(&[("QUIT", Duration::from_secs(5))]);
                return Err(Error::NotReady {
                    server: "postgres",
                    waited: STARTUP_TIMEOUT,
                    log: process::log_tail(&log_path, offset),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the server on our port is up and is ours (not another one that took the port).
    fn serves_our_data_dir(&self) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
            return false;
        }
        let Ok(reported) = self.run_psql("postgres", "show data_directory") else {
            return false;
        };
        let ours = std::fs::canonicalize(self.data_dir()).unwrap_or_else(|_| self.data_dir());
        std::fs::canonicalize(&reported).is_ok_and(|theirs| theirs == ours)
    }

    fn run_psql(&self, database: &str, sql: &str) -> Result<String> {
        let conninfo = format!(
            "host=127.0.0.1 port={} user={USER} dbname={database} sslmode=disable connect_timeout=5",
            self.port
        );
        let out = process::run(
            Command::new(&self.bins.psql)
                .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
                .arg(conninfo)
                .arg("-c")
                .arg(sql)
                .env_remove("PGOPTIONS")
                .env_remove("PGSERVICE"),
        )?;
        Ok(out.trim().to_owned())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate shutdown: the data is thrown away anyway.
        self.shut_down(&[("QUIT", Duration::from_secs(10))]);
    }
}
