//! A search spread over processes or machines without a distributed layer of its own: every level
//! (the number formats alone, each pruning level, each low-rank level) is an independent job,
//! `onnx-compress auto ... --only LEVEL`, that builds and scores into a journal of its own in the
//! shared work folder; `auto ... --collect DIR` then chooses from all of them. The plan is written
//! as `jobs.txt` (one command per line, for job arrays and GNU parallel), a `Makefile` (`make -j`)
//! and `collect.sh`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::{levels, AutoOptions, Dev};
use crate::options::Named;

/// Characters make reads in a target's name as its own (besides spaces).
const MAKE_SPECIAL: &str = ":#%$;=\\*?[]";

/// A shell word: as it is when plain, else in single quotes.
pub fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./,:=+@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn list(v: &[f64]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(",")
    }
}

/// The flags that reproduce `o` (every path absolute), without the mode flags.
pub fn args(o: &AutoOptions) -> Vec<String> {
    let p = |x: &Path| x.display().to_string();
    let mut a = vec!["auto".to_string(), p(&o.model), p(&o.out)];
    if let Some(t) = o.task {
        a.extend(["--task".into(), t.name().into()]);
    }
    if let Some(f) = o.format {
        a.extend(["--format".into(), f.name().into()]);
    }
    for (flag, v) in [
        ("--text-column", &o.columns.text),
        ("--text-pair-column", &o.columns.pair),
        ("--label-column", &o.columns.label),
        ("--labels", &o.labels),
    ] {
        if let Some(v) = v {
            a.extend([flag.into(), v.clone()]);
        }
    }
    a.extend([
        "--calib-data".into(),
        p(&o.calib_data),
        "--calib-samples".into(),
        o.calib_samples.to_string(),
        "--selection".into(),
        o.selection.to_string(),
    ]);
    if let Some(f) = &o.selection_data {
        a.extend(["--selection-data".into(), p(f)]);
    }
    a.extend([
        "--seed".into(),
        o.seed.to_string(),
        "--max-drop".into(),
        o.max_drop.to_string(),
        "--confidence".into(),
        o.confidence.to_string(),
        "--objective".into(),
        o.objective.name().into(),
        "--prune".into(),
        list(&o.prune),
        "--lowrank".into(),
        list(&o.lowrank),
        "--quant".into(),
        if o.quant.is_empty() {
            "none".into()
        } else {
            o.quant.join(",")
        },
        "--device".into(),
        o.device.name().into(),
    ]);
    // Flags that change nothing in the search are refused: given only where they apply.
    if o.quant.iter().any(|m| *m != "fp16") {
        a.extend(["--weight-type".into(), o.weight_type.name().into()]);
    }
    if let Some(m) = o.max_ffn_fraction {
        a.extend(["--max-ffn-fraction".into(), m.to_string()]);
    }
    if !o.unpad {
        a.push("--no-unpad".into());
    }
    a.extend([
        "--batch-size".into(),
        o.batch_size.to_string(),
        "--threads".into(),
        o.threads.to_string(),
        "--max-length".into(),
        o.max_length.to_string(),
    ]);
    match &o.dev {
        Dev::Split { dir, split } => a.extend(["--data".into(), p(dir), "--split".into(), split.clone()]),
        Dev::File(f) => a.extend(["--data".into(), p(f)]),
    }
    if o.objective == crate::auto::Objective::Speed {
        a.extend(["--rounds".into(), o.rounds.to_string()]);
    }
    a
}

fn line(exe: &Path, args: &[String]) -> String {
    std::iter::once(exe.display().to_string())
        .chain(args.iter().cloned())
        .map(|w| quote(&w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The written plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Written {
    pub dir: PathBuf,
    /// (level id, command) per job.
    pub jobs: Vec<(String, String)>,
    pub collect: String,
    pub files: Vec<PathBuf>,
}

/// Writes `jobs.txt`, `Makefile` and `collect.sh` into the work folder; `exe` is the binary the
/// commands run. `planned`: for the user to run (`--plan`); else run here (`--jobs`), where a
/// folder make cannot name (below) gets no Makefile.
pub fn write(o: &AutoOptions, exe: &Path, planned: bool) -> Result<Written> {
    let dir = &o.work;
    // make reads a path with a space (or one of its own characters) in a target as several.
    let text = dir.display().to_string();
    let unsafe_for_make = text.chars().find(|c| c.is_whitespace() || MAKE_SPECIAL.contains(*c));
    if let Some(c) = unsafe_for_make.filter(|_| planned) {
        bail!(
            "--plan {text}: the Makefile names files in this folder, and make cannot name a path with {}; choose a folder whose path has no space or any of {MAKE_SPECIAL}",
            if c.is_whitespace() { "a space".to_string() } else { format!("'{c}'") }
        );
    }
    // What every job would refuse, refused before the plan: the inputs, a selection too small
    // for the budget, a folder of another search's journals.
    let flag = if planned { "--plan" } else { "--work" };
    super::check_inputs(o)?;
    super::draw(o)?;
    super::journal::check_folder(dir, &super::settings(o), flag)?;
    std::fs::create_dir_all(dir).with_context(|| format!("{flag} {}: cannot create the folder", dir.display()))?;
    let base = args(o);
    let jobs: Vec<(String, String)> = levels(o)
        .iter()
        .filter(|l| **l != super::Structure::None || !o.quant.is_empty())
        .map(|l| {
            let mut a = base.clone();
            a.extend([
                "--work".into(),
                dir.display().to_string(),
                "--only".into(),
                l.id(),
                "-q".into(),
            ]);
            (l.id(), line(exe, &a))
        })
        .collect();
    let mut c = base.clone();
    c.extend(["--collect".into(), dir.display().to_string()]);
    let collect = line(exe, &c);

    let jobs_txt: String = jobs.iter().map(|(_, l)| format!("{l}\n")).collect();
    let mut make = format!(
        "# onnx-compress auto: one target per level; `make -j N -f {mk}` runs them, then `sh {sh}` chooses.\n\
         DONE := {done}\n\
         JOBS := {targets}\n\n\
         all: $(JOBS)\n\n",
        mk = quote(&dir.join("Makefile").display().to_string()),
        sh = quote(&dir.join("collect.sh").display().to_string()),
        done = dir.join("done").display(),
        targets = jobs
            .iter()
            .map(|(id, _)| format!("$(DONE)/{id}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    // The marker's path quoted for the shell too (make's own characters are refused above).
    let done = quote(&dir.join("done").display().to_string());
    for (id, l) in &jobs {
        make += &format!(
            "$(DONE)/{id}:\n\t{}\n\tmkdir -p {done} && touch {done}/{id}\n\n",
            l.replace('$', "$$")
        );
    }
    make += ".PHONY: all\n";
    let sh = format!(
        "#!/bin/sh\n# Chooses from the jobs' journals (after jobs.txt or the Makefile ran).\nexec {collect} \"$@\"\n"
    );
    let mut files = vec![];
    for (name, text) in [("jobs.txt", jobs_txt), ("Makefile", make), ("collect.sh", sh)] {
        if name == "Makefile" && unsafe_for_make.is_some() {
            continue;
        }
        let p = dir.join(name);
        crate::onnx::io::write_text(&p, &text)?;
        files.push(p);
    }
    Ok(Written {
        dir: dir.clone(),
        jobs,
        collect,
        files,
    })
}

/// Runs the plan's jobs here, `n` at a time (each job's output in `jobs/ID.log`); `tick` hears
/// (done, total). A failed job is an error naming it and its log.
pub fn run_local(w: &Written, n: usize, tick: &dyn Fn(usize, usize)) -> Result<()> {
    let logs = w.dir.join("jobs");
    std::fs::create_dir_all(&logs).with_context(|| logs.display().to_string())?;
    let mut queue = w.jobs.iter();
    let mut running: Vec<(String, PathBuf, std::process::Child, crate::interrupt::Job)> = vec![];
    let (total, mut done) = (w.jobs.len(), 0);
    let mut failed = vec![];
    // A job that cannot start or be waited for ends the run: the others are stopped, not left.
    let mut all = || -> Result<()> {
        loop {
            while running.len() < n.max(1) {
                let Some((id, cmd)) = queue.next() else { break };
                let log = logs.join(format!("{id}.log"));
                let f = std::fs::File::create(&log).with_context(|| log.display().to_string())?;
                let mut command = Command::new("sh");
                // `exec`: the job is the shell's process, so a signal to it reaches the work.
                command
                    .arg("-c")
                    .arg(format!("exec {cmd}"))
                    .stdout(Stdio::from(f.try_clone()?))
                    .stderr(Stdio::from(f));
                // Its own process group, stopped with this process (`crate::interrupt`): a SIGTERM
                // to this process alone left the jobs running.
                let (child, job) =
                    crate::interrupt::Job::spawn(&mut command).with_context(|| format!("starting job {id}"))?;
                running.push((id.clone(), log, child, job));
            }
            if running.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
            let mut k = 0;
            while k < running.len() {
                if let Some(status) = running[k].2.try_wait()? {
                    let (id, log, ..) = running.remove(k);
                    done += 1;
                    tick(done, total);
                    if !status.success() {
                        failed.push(format!("{id} (see {})", log.display()));
                    }
                } else {
                    k += 1;
                }
            }
        }
        Ok(())
    };
    let ran = all();
    if ran.is_err() {
        for (.., job) in &running {
            job.stop();
        }
    }
    ran?;
    if !failed.is_empty() {
        bail!("jobs failed: {}", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn words_are_quoted_only_when_needed() {
        assert_eq!(quote("/a/b.onnx"), "/a/b.onnx");
        assert_eq!(quote("0.8,0.7"), "0.8,0.7");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }
}
