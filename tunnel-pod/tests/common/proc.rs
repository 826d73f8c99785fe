//! Running processes for the namespace harnesses: polling, running a command to completion,
//! stopping a child. Shared by tunnel-pod's netns tests (`common`) and the e2e suite's branch
//! router (`magictunnel_e2e::peer`, through `#[path]`): std only.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Polls `f` every `interval` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(
    timeout: Duration,
    interval: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(interval);
    }
}

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion; panics when it cannot be started.
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(cmd)))
}

/// Runs a command that must succeed and returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "`{}` failed ({}):\n{}{}",
        describe(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts `cmd` with stdin closed and stdout and stderr in a new file `log`.
pub fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let out = fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let err = out
        .try_clone()
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(cmd)))
}

/// `cmd args…` as a [`Command`].
pub fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

fn signal(pid: u32, sig: &str) {
    // Errors are fine: the process may have exited in between.
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stops a child: SIGTERM, up to `grace` to exit, then SIGKILL. Returns its exit status if it
/// exited by itself within `grace`.
pub fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    signal(child.id(), "-TERM");
    let status = wait_for(grace, Duration::from_millis(20), || {
        child.try_wait().ok().flatten()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

/// The last `max` bytes of a log file, for failure messages.
pub fn tail(path: &Path, max: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("<cannot read: {e}>"));
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}
