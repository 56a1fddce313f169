//! Child processes: dropping root, waiting with a deadline, signals, log files.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result, find_binary};

/// Where util-linux keeps `setpriv` and `runuser` on the distributions we run on.
const SYSTEM_DIRS: [&str; 4] = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"];

/// How many log lines an error quotes.
const LOG_TAIL_LINES: usize = 40;

/// Starts programs either as ourselves or, when we are root, as an unprivileged user.
#[derive(Debug)]
pub(crate) struct Launcher {
    drop_to: Option<DropTo>,
}

#[derive(Debug)]
struct DropTo {
    uid: u32,
    gid: u32,
    tool: Tool,
}

#[derive(Debug)]
enum Tool {
    /// `setpriv` execs the program, so the child's pid is the program's pid.
    Setpriv(PathBuf),
    /// `runuser` stays around as the program's parent.
    Runuser(PathBuf, String),
}

impl Launcher {
    /// PostgreSQL refuses to run as root (CI runs as root), so then it runs as `postgres` or `nobody`.
    pub(crate) fn unprivileged() -> Result<Self> {
        if effective_uid() != Some(0) {
            return Ok(Launcher { drop_to: None });
        }
        let (name, uid, gid) = ["postgres", "nobody"]
            .into_iter()
            .find_map(|name| lookup_user(name).map(|(uid, gid)| (name, uid, gid)))
            .ok_or(Error::NoUnprivilegedUser)?;
        let dirs: Vec<PathBuf> = SYSTEM_DIRS.iter().map(PathBuf::from).collect();
        let hint = "install it with `apt-get install util-linux`";
        let tool = match find_binary("setpriv", &dirs, hint) {
            Ok(setpriv) => Tool::Setpriv(setpriv),
            Err(_) => Tool::Runuser(find_binary("runuser", &dirs, hint)?, name.to_owned()),
        };
        Ok(Launcher {
            drop_to: Some(DropTo { uid, gid, tool }),
        })
    }

    /// A command that runs `program` as the launcher's user.
    pub(crate) fn command(&self, program: &Path) -> Command {
        match &self.drop_to {
            None => Command::new(program),
            Some(DropTo {
                uid,
                gid,
                tool: Tool::Setpriv(setpriv),
            }) => {
                let mut cmd = Command::new(setpriv);
                cmd.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(program);
                cmd
            }
            Some(DropTo {
                tool: Tool::Runuser(runuser, name),
                ..
            }) => {
                let mut cmd = Command::new(runuser);
                cmd.args(["-u", name, "--"]).arg(program);
                cmd
            }
        }
    }

    /// Whether the spawned child is the program itself (and not a wrapper around it).
    pub(crate) fn execs(&self) -> bool {
        !matches!(
            self.drop_to,
            Some(DropTo {
                tool: Tool::Runuser(..),
                ..
            })
        )
    }

    /// Gives `path` to the launcher's user, so the program can write there.
    pub(crate) fn hand_over(&self, path: &Path) -> Result<()> {
        if let Some(DropTo { uid, gid, .. }) = self.drop_to {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(Error::io(format!("chowning {}", path.display())))?;
        }
        Ok(())
    }
}

/// The effective uid, read without `unsafe` from procfs.
fn effective_uid() -> Option<u32> {
    let from_status = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            // "Uid:\t<real>\t<effective>\t<saved>\t<fs>"
            let line = status.lines().find(|line| line.starts_with("Uid:"))?;
            line.split_whitespace().nth(2)?.parse().ok()
        });
    from_status.or_else(|| std::fs::metadata("/proc/self").ok().map(|meta| meta.uid()))
}

/// The uid and gid of a local user, from /etc/passwd.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let uid = fields.nth(1)?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// Waits for `child` up to `timeout`; `None` if it is still running.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            // An error here means the child was already reaped; nothing left to wait for.
            Err(_) => return None,
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Sends `signal` (a name such as `INT`) to `pid`, best effort.
///
/// The shell's `kill` builtin keeps us free of `unsafe` and of a dependency on procps.
pub(crate) fn signal(pid: u32, signal: &str) {
    let _ = Command::new("sh")
        .args(["-c", r#"kill -s "$0" "$1" 2>/dev/null"#, signal])
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stops `child` (whose server process is `pid`): each signal in turn with its grace period,
/// then SIGKILL; the child is always reaped.
pub(crate) fn shut_down(mut child: Child, pid: u32, steps: &[(&str, Duration)]) {
    for (sig, grace) in steps {
        if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        signal(pid, sig);
        if wait_timeout(&mut child, *grace).is_some() {
            return;
        }
    }
    if pid != child.id() {
        signal(pid, "KILL");
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A server's log file, opened for appending, as stdout and stderr of a child.
pub(crate) fn log_stdio(path: &Path) -> Result<(Stdio, Stdio)> {
    let context = || format!("opening {}", path.display());
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(Error::io(context()))?;
    let clone = file.try_clone().map_err(Error::io(context()))?;
    Ok((Stdio::from(file), Stdio::from(clone)))
}

/// The current length of a log file, so a later tail can skip what earlier runs wrote.
pub(crate) fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |meta| meta.len())
}

/// The last lines of a log file written after `offset`.
pub(crate) fn log_tail(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    let read = File::open(path).and_then(|mut file| {
        file.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(())
    });
    if let Err(err) = read {
        return format!("(could not read {}: {err})", path.display());
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// Runs `cmd` to completion; its stdout on success, [`Error::CommandFailed`] otherwise.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let command = describe(cmd);
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(Error::io(format!("running `{command}`")))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let stderr = if stderr.is_empty() {
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    } else {
        stderr
    };
    Err(Error::CommandFailed {
        command,
        status: output.status,
        stderr,
    })
}

/// The command line of `cmd`, for error messages.
fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_uid_is_readable() {
        assert!(effective_uid().is_some());
    }

    #[test]
    fn root_is_in_etc_passwd() {
        assert_eq!(lookup_user("root"), Some((0, 0)));
    }

    #[test]
    fn a_failing_command_reports_its_stderr() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("boom") && text.contains("sh -c"), "{text}");
    }

    #[test]
    fn a_log_tail_skips_what_came_before_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "old\n").unwrap();
        let offset = log_len(&path);
        std::fs::write(&path, "old\nnew\n").unwrap();
        assert_eq!(log_tail(&path, offset), "new");
    }
}
