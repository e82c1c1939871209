//! A group of child processes that cannot outlive this process.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The watchdog leads the process group. It ignores SIGTERM so that it survives its own
/// `kill -TERM 0`, waits for its standard input to close (this process is gone, or asked it
/// to stop), terminates the group, gives it a moment, kills what is left and removes the
/// data directory. Logs stay where they are.
const WATCHDOG: &str = r#"trap '' TERM INT
while read -r _; do :; done
kill -TERM 0 2>/dev/null
sleep 1
kill -KILL 0 2>/dev/null
rm -rf "$1"
"#;

pub(crate) struct ProcessGroup {
    watchdog: Child,
    watchdog_stdin: Option<ChildStdin>,
    pgid: Pid,
    children: Vec<(String, Child)>,
    /// How each child was started (name, program, arguments), to start it again.
    commands: Vec<(String, PathBuf, Vec<String>)>,
    logs: PathBuf,
    stopped: bool,
}

impl ProcessGroup {
    pub(crate) fn new(data_dir: &Path, logs: &Path) -> Result<Self> {
        use std::os::unix::process::CommandExt;
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .arg(data_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the watchdog shell")?;
        let pgid = Pid::from_raw(i32::try_from(watchdog.id())?);
        let watchdog_stdin = watchdog.stdin.take();
        Ok(Self {
            watchdog,
            watchdog_stdin,
            pgid,
            children: Vec::new(),
            commands: Vec::new(),
            logs: logs.to_path_buf(),
            stopped: false,
        })
    }

    pub(crate) fn spawn(&mut self, name: &str, program: &Path, args: &[String]) -> Result<()> {
        let log = File::create(self.logs.join(format!("{name}.log")))?;
        self.start(name, program, args, log)?;
        self.commands
            .push((name.to_owned(), program.to_path_buf(), args.to_vec()));
        Ok(())
    }

    /// The process group every child runs in (led by the watchdog).
    pub(crate) fn pgid(&self) -> i32 {
        self.pgid.as_raw()
    }

    /// Removes the child `name` from the group's bookkeeping and hands it over, still
    /// running: the caller stops it and waits for it (see `respawn`).
    pub(crate) fn take(&mut self, name: &str) -> Result<Child> {
        let Some(i) = self.children.iter().position(|(n, _)| n == name) else {
            bail!("no running child named {name}");
        };
        Ok(self.children.remove(i).1)
    }

    /// Starts `name` again with the arguments it was first started with, appending to its
    /// log.
    pub(crate) fn respawn(&mut self, name: &str) -> Result<()> {
        if self.stopped {
            bail!("the process group is stopped");
        }
        let Some((_, program, args)) = self.commands.iter().find(|(n, _, _)| n == name).cloned()
        else {
            bail!("{name} was never started");
        };
        let mut log = File::options()
            .append(true)
            .create(true)
            .open(self.logs.join(format!("{name}.log")))?;
        let _ = writeln!(log, "--- restarted by the lab ---");
        self.start(name, &program, &args, log)
    }

    fn start(&mut self, name: &str, program: &Path, args: &[String], log: File) -> Result<()> {
        use std::os::unix::process::CommandExt;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(self.pgid.as_raw())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        self.children.push((name.to_owned(), child));
        Ok(())
    }

    pub(crate) fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(_, c)| c.id()).collect()
    }

    /// Fails with the tail of the log of the first child that has exited.
    pub(crate) fn check_alive(&self) -> Result<()> {
        for (name, _) in &self.children {
            if !self.is_running(name) {
                return Err(self.failure(&format!("{name} exited")));
            }
        }
        Ok(())
    }

    fn is_running(&self, name: &str) -> bool {
        // /proc/<pid>/stat state Z means exited and not yet reaped.
        self.children
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, c)| std::fs::read_to_string(format!("/proc/{}/stat", c.id())).ok())
            .is_some_and(|stat| {
                stat.rsplit(')')
                    .next()
                    .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
            })
    }

    /// An error that names the logs and quotes the last lines of each.
    pub(crate) fn failure(&self, what: &str) -> anyhow::Error {
        let mut msg = format!("{what}; logs in {}", self.logs.display());
        for (name, _) in &self.children {
            let text =
                std::fs::read_to_string(self.logs.join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            msg.push_str(&format!("\n--- {name} (last lines)"));
            for line in tail.into_iter().rev() {
                msg.push_str("\n  ");
                msg.push_str(line);
            }
        }
        anyhow!(msg)
    }

    pub(crate) fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        // Closing the pipe tells the watchdog to take the group down.
        if let Some(mut stdin) = self.watchdog_stdin.take() {
            let _ = stdin.flush();
        }
        let _ = self.watchdog.wait();
        // The watchdog already killed the group; this only covers a watchdog that died.
        let _ = killpg(self.pgid, Signal::SIGKILL);
        for (_, child) in &mut self.children {
            let _ = child.wait();
        }
    }
}
