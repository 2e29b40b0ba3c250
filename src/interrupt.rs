//! What a run stopped by a signal leaves behind. The binary calls [`install`]; from then on
//! SIGINT, SIGTERM or SIGHUP removes the temporary files being written ([`Temp`]: a model, its
//! external data, a report, `run`'s temporary folder) and stops the jobs this process started ([`Job`]: `auto --jobs`),
//! then the process ends as the signal would have ended it. Without it, a Ctrl-C while a large
//! model is written left its `.partial` file, and a SIGTERM to `auto --jobs` left its jobs running.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static JOBS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
            // Held to the end: a file the work goes on to start cannot register and be written.
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

/// Removes every registered temporary file and stops every registered job (its whole process
/// group: the shell and what it runs). Returns the registry of files, locked.
#[cfg(unix)]
fn clean_up() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    let mut temps = lock(&TEMPS);
    for path in temps.drain(..) {
        let _ = if path.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
    }
    for pid in lock(&JOBS).drain(..) {
        if let Ok(group) = i32::try_from(pid) {
            // SAFETY: kill(2) has no memory effects; a group that has ended is an error ignored.
            unsafe {
                libc::kill(-group, libc::SIGTERM);
            }
        }
    }
    temps
}

/// A temporary file (or folder, with what it holds), removed if the process is stopped by a
/// signal while it is registered.
pub struct Temp(PathBuf);

impl Temp {
    pub fn register(path: &Path) -> Temp {
        lock(&TEMPS).push(path.to_path_buf());
        Temp(path.to_path_buf())
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

/// A job started in its own process group ([`std::os::unix::process::CommandExt::process_group`]
/// with 0), stopped with its group if the process is stopped by a signal while it is registered.
pub struct Job(u32);

impl Job {
    pub fn register(pid: u32) -> Job {
        lock(&JOBS).push(pid);
        Job(pid)
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
        let ta = Temp::register(&a);
        {
            let _tb = Temp::register(&b);
            assert!(lock(&TEMPS).contains(&b));
        }
        assert!(!lock(&TEMPS).contains(&b));
        assert!(lock(&TEMPS).contains(&a));
        drop(ta);
        assert!(!lock(&TEMPS).contains(&a));
        let j = Job::register(u32::MAX);
        assert!(lock(&JOBS).contains(&u32::MAX));
        drop(j);
        assert!(!lock(&JOBS).contains(&u32::MAX));
    }
}
