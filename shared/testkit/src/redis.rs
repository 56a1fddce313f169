//! A throwaway Redis server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{Error, Result, find_binary, free_port, process, resp};

/// How long the server may take to answer PING.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a fresh port is tried when another process took the one we picked.
const PORT_ATTEMPTS: usize = 5;

/// A Redis server with its own directory and port, without persistence; killed and removed on drop.
#[derive(Debug)]
pub struct Redis {
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    // Last, so the directory is removed only after Drop stopped the server.
    dir: TempDir,
}

impl Redis {
    /// Starts `redis-server` on a free port with a fresh temporary directory.
    pub fn start() -> Result<Self> {
        let bin = find_binary(
            "redis-server",
            &[PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")],
            "install it with `apt-get install redis-server`",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("tickmesh-redis-")
            .tempdir()
            .map_err(Error::io("creating a temporary directory for redis"))?;
        let mut redis = Redis {
            bin,
            port: 0,
            child: None,
            dir,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            redis.port = free_port();
            match redis.launch() {
                Ok(()) => break,
                Err(Error::Exited { ref log, .. })
                    if attempt < PORT_ATTEMPTS && log.contains("already in use") => {}
                Err(err) => return Err(err),
            }
        }
        Ok(redis)
    }

    /// The port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's working directory (`--dir`), holding its log; removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log file (stdout and stderr of every start).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The server's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends one command; the reply as text (`(nil)` for nil, array elements one per line).
    ///
    /// An error reply is an [`Error::RedisReply`].
    pub fn command(&self, args: &[&str]) -> Result<String> {
        resp::command(self.port, args)
    }

    /// Stops the server (`SHUTDOWN NOSAVE`, then SIGKILL if it lingers); the process is reaped.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The server hangs up instead of replying, so the outcome says nothing; waiting does.
        let _ = resp::command(self.port, &["SHUTDOWN", "NOSAVE"]);
        if process::wait_timeout(&mut child, Duration::from_secs(10)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs, and starts it again on the same port (the data is gone).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch()
    }

    /// Spawns redis-server on `self.port` and waits until it answers PING from our directory.
    fn launch(&mut self) -> Result<()> {
        let log_path = self.log_path();
        let offset = process::log_len(&log_path);
        let (stdout, stderr) = process::log_stdio(&log_path)?;
        let child = Command::new(&self.bin)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--daemonize", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(Error::io("spawning redis-server"))?;
        self.child = Some(child);

        let started = Instant::now();
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(Error::Exited {
                    server: "redis-server",
                    status,
                    log: process::log_tail(&log_path, offset),
                });
            }
            if self.serves_our_dir() {
                return Ok(());
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                if let Some(mut child) = self.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(Error::NotReady {
                    server: "redis-server",
                    waited: STARTUP_TIMEOUT,
                    log: process::log_tail(&log_path, offset),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the server on our port answers and is ours (not another one that took the port).
    fn serves_our_dir(&self) -> bool {
        if !self.command(&["PING"]).is_ok_and(|reply| reply == "PONG") {
            return false;
        }
        let Ok(reply) = self.command(&["CONFIG", "GET", "dir"]) else {
            return false;
        };
        let ours = std::fs::canonicalize(self.dir.path()).ok();
        let theirs = reply
            .lines()
            .nth(1)
            .and_then(|dir| std::fs::canonicalize(dir).ok());
        ours.is_some() && ours == theirs
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
