//! What a run stopped by a signal leaves behind. The binary calls [`install`]; from then on
//! SIGINT, SIGTERM or SIGHUP removes the temporary files being written ([`Temp`]: a model, its
//! external data, a report, `run`'s temporary folder) and stops the jobs this process started
//! ([`Job`]: `auto --jobs`), then the process ends as the signal would have ended it. A save's
//! renames ([`commit`]: a model and its external data) finish first. Without it, a Ctrl-C while a
//! large model is written left its `.partial` file, and a SIGTERM to `auto --jobs` left its jobs
//! running.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard};

static TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static JOBS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static COMMIT: Mutex<()> = Mutex::new(());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts a thread that waits for SIGINT, SIGTERM or SIGHUP and then cleans up and ends the
/// process with that signal. Call it once, at the start of the binary.
#[cfg(unix)]
pub fn install() -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            // Held to the end: no save renames, no file registers and no job starts after this.
            let _held = clean_up();
            // The default action (ending the process, status 128 + signal in a shell).
            let _ = signal_hook::low_level::emulate_default_handler(signal);
            std::process::exit(128 + signal);
        }
    });
    Ok(())
}

#[cfg(not(unix))]
pub fn install() -> std::io::Result<()> {
    Ok(())
}

type Held = (
    MutexGuard<'static, ()>,
    MutexGuard<'static, Vec<PathBuf>>,
    MutexGuard<'static, Vec<u32>>,
);

/// Waits for a save's renames, removes every registered temporary file and stops every
/// registered job (its whole process group: the shell and what it runs). Returns the registries,
/// locked (in the order [`commit`] then [`Temp`] take them).
#[cfg(unix)]
fn clean_up() -> Held {
    let commit = lock(&COMMIT);
    let mut temps = lock(&TEMPS);
    for path in temps.drain(..) {
        let _ = if path.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
    }
    let mut jobs = lock(&JOBS);
    for pid in jobs.drain(..) {
        stop_group(pid);
    }
    (commit, temps, jobs)
}

/// SIGTERM to the process group `pid` leads.
fn stop_group(pid: u32) {
    #[cfg(unix)]
    if let Ok(group) = i32::try_from(pid) {
        // SAFETY: kill(2) has no memory effects; a group that has ended is an error ignored.
        unsafe {
            libc::kill(-group, libc::SIGTERM);
        }
    }
    #[cfg(not(unix))]
    let _ = pid;
}

/// Held while a save renames its files into place: a signal then waits for both renames, so a
/// model is never left beside another model's external data.
pub fn commit() -> MutexGuard<'static, ()> {
    lock(&COMMIT)
}

/// A temporary file (or folder, with what it holds), removed if the process is stopped by a
/// signal while it is registered.
pub struct Temp(PathBuf);

impl Temp {
    /// Creates a temporary file or folder with `make` and registers the path `path_of` gives,
    /// in one step (the registry is locked across both), so that a signal cannot fall between
    /// and leave it behind.
    pub fn create<T, E>(
        make: impl FnOnce() -> Result<T, E>,
        path_of: impl FnOnce(&T) -> &Path,
    ) -> Result<(T, Temp), E> {
        let mut temps = lock(&TEMPS);
        let made = make()?;
        let path = path_of(&made).to_path_buf();
        temps.push(path.clone());
        Ok((made, Temp(path)))
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let mut temps = lock(&TEMPS);
        if let Some(i) = temps.iter().position(|p| *p == self.0) {
            temps.swap_remove(i);
        }
    }
}

/// A job: a child in a process group of its own, stopped with its group if this process is
/// stopped by a signal (or dies: on Linux the child is sent SIGTERM then, so `command` should
/// `exec` what it runs) while it is registered, or by [`Job::stop`].
pub struct Job(u32);

impl Job {
    /// Starts `command` and registers it in one step, so that a signal cannot fall between.
    pub fn spawn(command: &mut Command) -> std::io::Result<(Child, Job)> {
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            command.process_group(0);
            #[cfg(target_os = "linux")]
            // SAFETY: prctl(2) only, between fork and exec: async-signal-safe.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        let mut jobs = lock(&JOBS);
        let child = command.spawn()?;
        jobs.push(child.id());
        let job = Job(child.id());
        Ok((child, job))
    }

    /// Stops the job's process group now.
    pub fn stop(&self) {
        stop_group(self.0);
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        lock(&JOBS).retain(|&p| p != self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_end_with_their_guards() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fn make(p: &Path) -> impl FnOnce() -> std::io::Result<PathBuf> + '_ {
            move || std::fs::write(p, "x").map(|()| p.to_path_buf())
        }
        let (_, ta) = Temp::create(make(&a), |p| p.as_path()).unwrap();
        {
            let (_, _tb) = Temp::create(make(&b), |p| p.as_path()).unwrap();
            assert!(lock(&TEMPS).contains(&b));
        }
        // A creation that fails registers nothing.
        let missing = dir.path().join("no/such/folder");
        assert!(Temp::create(make(&missing), |p| p.as_path()).is_err());
        assert!(!lock(&TEMPS).contains(&missing));
        assert!(!lock(&TEMPS).contains(&b));
        assert!(lock(&TEMPS).contains(&a));
        drop(ta);
        assert!(!lock(&TEMPS).contains(&a));
        let (mut child, job) = Job::spawn(&mut Command::new("true")).unwrap();
        assert!(lock(&JOBS).contains(&child.id()));
        child.wait().unwrap();
        drop(job);
        assert!(!lock(&JOBS).contains(&child.id()));
    }
}
