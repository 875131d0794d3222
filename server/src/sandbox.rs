//! Running code nib did not write (the user's code under generated tests) with limits: its own
//! process group, a wall-clock timeout, CPU-time, memory and file-size limits, a private
//! temporary folder as its working directory, an environment without secrets, stdin closed,
//! output captured up to a cap while it runs, and, where unprivileged user namespaces allow it,
//! no network and read-only workspace folders. Cancellation kills the whole group; every child
//! is reaped.

use std::ffi::{CString, OsString};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::engine::CancelToken;

/// A folder only this user can enter (mode 0700, a random name made by `mkdtemp`), removed
/// with everything in it when dropped. Files in it are created new, never through a link.
pub struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    /// A new folder under the system's temporary folder, named `<prefix>-XXXXXX`.
    pub fn new(prefix: &str) -> io::Result<PrivateDir> {
        let template = std::env::temp_dir().join(format!("{prefix}-XXXXXX"));
        let template = CString::new(template.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "temporary folder path holds a NUL byte"))?;
        let mut bytes = template.into_bytes_with_nul();
        // SAFETY: `bytes` is a writable NUL-terminated template; mkdtemp fills in the X's.
        let made = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) };
        if made.is_null() {
            return Err(io::Error::last_os_error());
        }
        bytes.pop();
        Ok(PrivateDir { path: PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a new file at `relative` (folders made as needed, mode 0700). Fails when the
    /// path exists, holds `..`, or any part of it is a symbolic link.
    pub fn write(&self, relative: &Path, contents: &[u8]) -> io::Result<PathBuf> {
        if relative.is_absolute() || relative.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a plain relative path"));
        }
        let file = self.path.join(relative);
        if let Some(parent) = file.parent() {
            let mut folder = self.path.clone();
            for part in parent.strip_prefix(&self.path).unwrap_or(Path::new("")).components() {
                folder.push(part);
                match std::fs::symlink_metadata(&folder) {
                    Ok(meta) if meta.file_type().is_dir() => {}
                    Ok(_) => return Err(io::Error::new(io::ErrorKind::AlreadyExists, "not a folder")),
                    Err(_) => std::fs::DirBuilder::new().mode(0o700).create(&folder)?,
                }
            }
        }
        let mut handle = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&file)?;
        handle.write_all(contents)?;
        Ok(file)
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// What a sandboxed process may use.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Killed (with its group) after this long.
    pub wall: Duration,
    /// `RLIMIT_CPU`, seconds.
    pub cpu_seconds: u64,
    /// `RLIMIT_AS`, bytes (address space); `None` for runtimes that reserve huge ranges (V8, Go).
    pub address_space: Option<u64>,
    /// `RLIMIT_DATA`, bytes (heap and private mappings).
    pub data: u64,
    /// `RLIMIT_FSIZE`, bytes: the largest file it may write.
    pub file_size: u64,
    /// Bytes of stdout and of stderr kept; the rest is read and dropped.
    pub output: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            wall: Duration::from_secs(20),
            cpu_seconds: 20,
            address_space: Some(2 << 30),
            data: 2 << 30,
            file_size: 64 << 20,
            output: 256 << 10,
        }
    }
}

/// One program to run.
#[derive(Clone, Debug)]
pub struct Spec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Its working directory (normally a `PrivateDir`); also `HOME` and `TMPDIR`.
    pub cwd: PathBuf,
    /// Variables it gets besides `PATH`, `HOME`, `TMPDIR`, `LANG`; nothing else is passed on.
    pub env: Vec<(String, String)>,
    /// Folders it may read but not write (the workspace folders), where isolation is available.
    pub read_only: Vec<PathBuf>,
    pub limits: Limits,
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// `None` when it was killed for time or cancellation.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
    pub cancelled: bool,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// A short reason for a failed run: the time limit, a signal, or the last line of stderr.
    pub fn failure(&self) -> String {
        if self.timed_out {
            return "it ran past its time limit".into();
        }
        if let Some(signal) = self.status.and_then(|s| s.signal()) {
            let what = match signal {
                libc::SIGXCPU => "its CPU-time limit",
                libc::SIGKILL => "a kill (memory or time limit)",
                libc::SIGSEGV => "a crash",
                _ => "a signal",
            };
            return format!("it was stopped by {what} (signal {signal})");
        }
        let stderr = String::from_utf8_lossy(&self.stderr);
        stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("unknown error").trim().to_string()
    }
}

/// Whether runs get isolation, probed once by the first run (`isolation_available`).
static ISOLATION: OnceLock<bool> = OnceLock::new();

/// `isolation_available` if a run has probed it already, else `None`: asking runs nothing
/// (nib starts no program except for an explicit action).
pub fn isolation_probed() -> Option<bool> {
    ISOLATION.get().copied()
}

/// Whether runs get their own network and mount namespaces (no network, read-only workspace
/// folders): needs unprivileged user namespaces. Probed once, by starting `/bin/sh`.
pub fn isolation_available() -> bool {
    *ISOLATION.get_or_init(|| {
        let Ok(prepared) = Isolation::prepare(&[]) else { return false };
        let mut command = Command::new("/bin/sh");
        command.args(["-c", "exit 0"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: `enter` only makes async-signal-safe system calls on prepared data.
        unsafe { command.pre_exec(move || prepared.enter()) };
        let works = command.status().is_ok_and(|s| s.success());
        if !works {
            tracing::info!("no user namespaces: test runs keep the network and may write to the workspace");
        }
        works
    })
}

/// Runs `spec`, polling `cancel`; the group is killed on timeout or cancellation.
pub fn run(spec: &Spec, cancel: &CancelToken) -> io::Result<Outcome> {
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .current_dir(&spec.cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()))
        .env("HOME", &spec.cwd)
        .env("TMPDIR", &spec.cwd)
        .env("LANG", "C.UTF-8")
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let isolation = if isolation_available() { Some(Isolation::prepare(&spec.read_only)?) } else { None };
    let limits = spec.limits.clone();
    // SAFETY: the closure makes only async-signal-safe system calls on data prepared before
    // the fork (no allocation, no locks).
    unsafe {
        command.pre_exec(move || {
            if let Some(isolation) = &isolation {
                isolation.enter()?;
            }
            apply_limits(&limits)?;
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let group = child.id() as libc::pid_t;
    let stdout = capture(child.stdout.take(), spec.limits.output);
    let stderr = capture(child.stderr.take(), spec.limits.output);
    let started = Instant::now();
    let (mut timed_out, mut cancelled) = (false, false);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        timed_out = started.elapsed() > spec.limits.wall;
        cancelled = cancel.is_cancelled();
        if timed_out || cancelled {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Also after a normal exit: whatever it left running in its group goes too.
    // SAFETY: plain system call; `group` is the child's own process group.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    if status.is_none() {
        let _ = child.wait();
    }
    Ok(Outcome { status, stdout: collect(stdout), stderr: collect(stderr), timed_out, cancelled })
}

type Captured = crossbeam_channel::Receiver<Vec<u8>>;

/// Reads `pipe` on a thread while the process runs, keeping the first `cap` bytes.
fn capture(pipe: Option<impl Read + Send + 'static>, cap: usize) -> Captured {
    let (sender, receiver) = crossbeam_channel::bounded(1);
    if let Some(mut pipe) = pipe {
        let spawned = std::thread::Builder::new().name("nib-sandbox-io".into()).spawn(move || {
            let mut kept = Vec::new();
            let mut chunk = [0u8; 8192];
            while let Ok(read) = pipe.read(&mut chunk) {
                if read == 0 {
                    break;
                }
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..read.min(room)]);
            }
            let _ = sender.send(kept);
        });
        if let Err(error) = spawned {
            tracing::warn!("cannot start an output reader: {error}");
        }
    }
    receiver
}

/// The captured bytes; a pipe held open by an escaped grandchild is given up after a second.
fn collect(captured: Captured) -> Vec<u8> {
    captured.recv_timeout(Duration::from_secs(1)).unwrap_or_default()
}

/// Sets a limit; the hard limit is one above, so CPU time ends with `SIGXCPU` before `SIGKILL`.
fn set_limit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let limit = libc::rlimit { rlim_cur: value as libc::rlim_t, rlim_max: value.saturating_add(1) as libc::rlim_t };
    // SAFETY: plain system call with a valid pointer.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn apply_limits(limits: &Limits) -> io::Result<()> {
    set_limit(libc::RLIMIT_CPU, limits.cpu_seconds)?;
    if let Some(bytes) = limits.address_space {
        set_limit(libc::RLIMIT_AS, bytes)?;
    }
    set_limit(libc::RLIMIT_DATA, limits.data)?;
    set_limit(libc::RLIMIT_FSIZE, limits.file_size)?;
    set_limit(libc::RLIMIT_CORE, 0)
}

/// What the child needs to enter its own user, network and mount namespaces, prepared before
/// the fork so the child only makes system calls.
struct Isolation {
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    read_only: Vec<CString>,
}

impl Isolation {
    fn prepare(read_only: &[PathBuf]) -> io::Result<Isolation> {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let read_only = read_only
            .iter()
            .filter(|path| path.is_dir())
            .map(|path| CString::new(path.as_os_str().as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a folder path holds a NUL byte"))?;
        Ok(Isolation {
            uid_map: format!("{uid} {uid} 1").into_bytes(),
            gid_map: format!("{gid} {gid} 1").into_bytes(),
            read_only,
        })
    }

    /// In the child: new namespaces (the network one has no interfaces up), the same user
    /// ids, and the workspace folders bound read-only.
    fn enter(&self) -> io::Result<()> {
        let check = |result: libc::c_int| if result == 0 { Ok(()) } else { Err(io::Error::last_os_error()) };
        // SAFETY: system calls on NUL-terminated literals and prepared buffers.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET | libc::CLONE_NEWNS))?;
            write_proc(c"/proc/self/setgroups", b"deny")?;
            write_proc(c"/proc/self/uid_map", &self.uid_map)?;
            write_proc(c"/proc/self/gid_map", &self.gid_map)?;
            let none = std::ptr::null::<libc::c_char>();
            check(libc::mount(none, c"/".as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()))?;
            for folder in &self.read_only {
                check(libc::mount(
                    folder.as_ptr(),
                    folder.as_ptr(),
                    none,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                // A remount must keep the flags the kernel locked for this namespace.
                let mut stat: libc::statvfs = std::mem::zeroed();
                check(libc::statvfs(folder.as_ptr(), &mut stat))?;
                let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
                for (kept, mount_flag) in [
                    (libc::ST_NOSUID, libc::MS_NOSUID),
                    (libc::ST_NODEV, libc::MS_NODEV),
                    (libc::ST_NOEXEC, libc::MS_NOEXEC),
                    (libc::ST_NOATIME, libc::MS_NOATIME),
                    (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
                    (libc::ST_RELATIME, libc::MS_RELATIME),
                ] {
                    if stat.f_flag & kept != 0 {
                        flags |= mount_flag;
                    }
                }
                check(libc::mount(none, folder.as_ptr(), none, flags, std::ptr::null()))?;
            }
        }
        Ok(())
    }
}

/// Writes `data` to a /proc file with raw system calls (safe between fork and exec).
unsafe fn write_proc(path: &std::ffi::CStr, data: &[u8]) -> io::Result<()> {
    // SAFETY: the caller is the forked child; `path` is NUL-terminated, `data` a valid slice.
    unsafe {
        let descriptor = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if descriptor < 0 {
            return Err(io::Error::last_os_error());
        }
        let written = libc::write(descriptor, data.as_ptr().cast(), data.len());
        libc::close(descriptor);
        if written != data.len() as isize {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str, cwd: &Path, limits: Limits) -> Spec {
        Spec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            cwd: cwd.to_path_buf(),
            env: Vec::new(),
            read_only: Vec::new(),
            limits,
        }
    }

    #[test]
    fn private_folders_are_0700_random_and_refuse_links_and_existing_files() {
        use std::os::unix::fs::PermissionsExt;
        let first = PrivateDir::new("nib-test").unwrap();
        let second = PrivateDir::new("nib-test").unwrap();
        assert_ne!(first.path(), second.path());
        let mode = std::fs::metadata(first.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let written = first.write(Path::new("pkg/a.py"), b"x = 1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&written).unwrap(), "x = 1\n");
        assert_eq!(std::fs::metadata(&written).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(first.write(Path::new("pkg/a.py"), b"again").is_err(), "an existing file is never reused");
        std::os::unix::fs::symlink("/etc/hostname-nib-missing", first.path().join("link.py")).unwrap();
        assert!(first.write(Path::new("link.py"), b"x").is_err(), "a link is never followed");
        assert!(first.write(Path::new("../escape.py"), b"x").is_err());
        let gone = first.path().to_path_buf();
        drop(first);
        assert!(!gone.exists());
    }

    #[test]
    fn output_is_read_while_the_process_runs_and_capped() {
        let folder = PrivateDir::new("nib-test").unwrap();
        let limits = Limits { output: 1000, ..Limits::default() };
        // 1 MiB on stderr: a reader that waits for the exit would leave the child blocked on a
        // full pipe until the time limit.
        let spec = shell("head -c 1048576 /dev/zero | tr '\\0' x >&2; echo done; exit 3", folder.path(), limits);
        let outcome = run(&spec, &CancelToken::default()).unwrap();
        assert!(!outcome.timed_out);
        assert_eq!(outcome.status.and_then(|s| s.code()), Some(3));
        assert_eq!(outcome.stderr.len(), 1000);
        assert_eq!(outcome.stdout, b"done\n");
    }

    #[test]
    fn a_timeout_kills_the_group_and_reaps_the_child() {
        let folder = PrivateDir::new("nib-test").unwrap();
        let limits = Limits { wall: Duration::from_millis(300), ..Limits::default() };
        let spec = shell("sleep 30 & echo $! > grandchild; echo $$ > child; wait", folder.path(), limits);
        let started = Instant::now();
        let outcome = run(&spec, &CancelToken::default()).unwrap();
        assert!(outcome.timed_out && outcome.status.is_none());
        assert!(started.elapsed() < Duration::from_secs(5));
        for file in ["child", "grandchild"] {
            let pid = std::fs::read_to_string(folder.path().join(file)).unwrap();
            let pid = pid.trim();
            // Reaped: no process (not even a zombie) is left. The grandchild is reaped by init.
            let deadline = Instant::now() + Duration::from_secs(5);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{file} {pid} is still there");
        }
    }

    #[test]
    fn cancellation_kills_the_group() {
        let folder = PrivateDir::new("nib-test").unwrap();
        let spec = shell("sleep 30", folder.path(), Limits::default());
        let cancel = CancelToken::default();
        let canceller = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            canceller.cancel();
        });
        let outcome = run(&spec, &cancel).unwrap();
        assert!(outcome.cancelled && outcome.status.is_none());
    }

    #[test]
    fn the_environment_holds_no_secrets_and_stdin_is_closed() {
        let folder = PrivateDir::new("nib-test").unwrap();
        // SAFETY: tests in this module read no other variable concurrently.
        unsafe { std::env::set_var("NIB_TEST_SECRET_API_KEY", "hunter2") };
        let spec = shell("env; cat; echo end", folder.path(), Limits::default());
        let outcome = run(&spec, &CancelToken::default()).unwrap();
        let text = String::from_utf8_lossy(&outcome.stdout);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains(&format!("HOME={}", folder.path().display())), "{text}");
        assert!(text.ends_with("end\n"), "stdin reads as empty: {text}");
    }

    #[test]
    fn the_cpu_limit_stops_a_busy_loop() {
        let folder = PrivateDir::new("nib-test").unwrap();
        // A long wall limit: on a loaded machine one CPU-second can take many seconds.
        let limits = Limits { cpu_seconds: 1, wall: Duration::from_secs(120), ..Limits::default() };
        let outcome = run(&shell("while :; do :; done", folder.path(), limits), &CancelToken::default()).unwrap();
        assert!(!outcome.timed_out, "the CPU limit stops it first");
        assert_eq!(outcome.status.and_then(|s| s.signal()), Some(libc::SIGXCPU), "{outcome:?}");
    }

    #[test]
    fn isolated_runs_have_no_network_and_cannot_write_the_workspace() {
        if !isolation_available() {
            eprintln!("no unprivileged user namespaces here: isolation is documented as unavailable");
            return;
        }
        let workspace = PrivateDir::new("nib-test-workspace").unwrap();
        let folder = PrivateDir::new("nib-test").unwrap();
        let mut spec = shell(
            "touch \"$1/written\" 2>/dev/null && echo wrote; cat /proc/net/dev | grep -c ':' ; touch here && echo cwd-ok",
            folder.path(),
            Limits::default(),
        );
        spec.args.extend(["sh".into(), workspace.path().as_os_str().to_owned()]);
        spec.read_only = vec![workspace.path().to_path_buf()];
        let outcome = run(&spec, &CancelToken::default()).unwrap();
        let text = String::from_utf8_lossy(&outcome.stdout);
        assert!(!text.contains("wrote"), "{text}");
        assert!(!workspace.path().join("written").exists());
        assert!(text.starts_with("1\n"), "only the loopback interface: {text}");
        assert!(text.contains("cwd-ok"), "its own folder stays writable: {text}");
    }
}
