//! The journal of an `auto` search: one JSON line per finished candidate in `journal.jsonl` of the
//! work folder, after a first line with the settings that make results comparable. A search that
//! is interrupted and started again with the same settings reuses every candidate the journal
//! holds (whose model file is still there) instead of building and scoring it again. Jobs of a
//! plan (`--only`) each write a journal of their own under `jobs/`, so that they can run at once;
//! every journal of the folder is read.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub const FILE: &str = "journal.jsonl";

/// What a candidate's results depend on, besides the candidate itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub tool_version: String,
    /// How candidates are built ([`BUILDS`]; journals from before the number: 0).
    #[serde(default)]
    pub builds: u32,
    pub model: PathBuf,
    pub model_bytes: u64,
    /// [`fingerprint`]s of the model (with its external data, and the tokenizer and config.json
    /// beside it) and of the training and selection files: one replaced at the same path, with
    /// the same size (a model fine-tuned again), is another search, not this one's journal.
    /// Journals from before: none (refused as made by an older onnx-compress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calib_data_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection_data_fingerprint: Option<String>,
    /// The GLUE task, or `none` (the user's own files).
    pub task: String,
    /// The files' format, columns and class names where given (journals from before: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<crate::data::Columns>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
    pub calib_data: PathBuf,
    pub calib_samples: usize,
    pub selection: usize,
    #[serde(default)]
    pub selection_data: Option<PathBuf>,
    pub seed: u64,
    pub max_length: usize,
    pub device: String,
    /// How int8 weights are stored (journals from before the choice: s8).
    #[serde(default = "s8")]
    pub weight_type: String,
    /// How much of one layer's FFN a pruning level may take, when given (`None`: by the level's
    /// depth, and in journals from before the choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ffn_fraction: Option<f64>,
    /// Whether static INT8 candidates are unpadded (journals from before the choice: no).
    #[serde(default)]
    pub unpad: bool,
    /// Examples per scoring batch where not the task's (dynamic INT8 answers by its batch;
    /// `None`: the task's, as in journals from before the choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
}

/// A fingerprint of the bytes of `paths` in order: their XXH3-128 (each file's length hashed
/// before its bytes, so where one ends counts) and the byte count; `None` where one cannot be
/// read. A check that a file at the same path is still the same file (two changed bytes anywhere
/// change it), not a defence against a forged one.
pub fn fingerprint(paths: &[PathBuf]) -> Option<String> {
    use std::io::Read;
    let mut hash = twox_hash::XxHash3_128::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for p in paths {
        let mut f = std::fs::File::open(p).ok()?;
        hash.write(&f.metadata().ok()?.len().to_le_bytes());
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    hash.write(&buf[..n]);
                    total += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }
    Some(format!("{:032x}-{total}", hash.finish_128()))
}

/// The way candidates are built, counted up when a change makes the candidate files of older
/// journals wrong or slower, so that a search does not take them from such a journal:
/// 1 since the static INT8 candidates' bias Adds on packed rows became Sums (abd7c8f: before it
/// their projections ran in float); 2 since a MAC budget overshot by more than 1% gets back the
/// units it has room for (a small model's pruned candidates keep more).
pub const BUILDS: u32 = 2;

fn s8() -> String {
    "s8".into()
}

/// One scored candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    /// The model file, relative to the work folder.
    pub model: String,
    /// Seconds spent building it (its structure's build not included for a number format).
    pub build_seconds: f64,
    pub params: usize,
    pub macs: Option<u64>,
    pub bytes: u64,
    /// Selection examples scored (all of them, or the first rung when dropped early).
    pub examples: usize,
    pub correct: usize,
    /// The baseline's correct answers on the same examples.
    pub baseline_correct: usize,
    /// Stopped after the first rung: out of the budget beyond doubt.
    pub dropped_early: bool,
    /// The `--max-drop` it was scored under (what "dropped early" means).
    pub budget: f64,
    /// Of the examples scored: those the baseline gets right and this candidate wrong, and the
    /// reverse — what the paired difference's standard error is made of. `None` in journals
    /// written before they were kept (such a candidate is scored again).
    #[serde(default)]
    pub discordant: Option<[usize; 2]>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    settings: Settings,
}

pub struct Journal {
    path: PathBuf,
    entries: BTreeMap<String, Entry>,
}

impl Journal {
    /// Opens the journal of `work` (`job`: the job's own, under `jobs/`), creating the folder and
    /// the file, with the entries of every journal of the folder; refuses one written with other
    /// settings (`flag` names the folder's flag in the error). A last line cut short by an
    /// interruption is ignored.
    pub fn open(work: &Path, settings: &Settings, job: Option<&str>, flag: &str) -> Result<Journal> {
        std::fs::create_dir_all(work).with_context(|| {
            let flag = if flag == "--only" { "--work" } else { flag };
            format!("{flag} {}: cannot create the folder", work.display())
        })?;
        let path = match job {
            None => work.join(FILE),
            Some(id) => {
                let dir = work.join("jobs");
                std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
                dir.join(format!("{id}.jsonl"))
            }
        };
        let mut entries = BTreeMap::new();
        for other in journals(work).iter().filter(|p| **p != path) {
            let text = std::fs::read_to_string(other).with_context(|| other.display().to_string())?;
            let mut lines = text.lines();
            check_header(other, lines.next(), settings, flag)?;
            for e in lines.filter_map(|l| serde_json::from_str::<Entry>(l).ok()) {
                entries.insert(e.id.clone(), e);
            }
        }
        if path.is_file() {
            let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
            let mut lines = text.lines();
            check_header(&path, lines.next(), settings, flag)?;
            let own: Vec<Entry> = lines.filter_map(|l| serde_json::from_str::<Entry>(l).ok()).collect();
            // Rewrite without a torn last line, so that appends start on a line of their own.
            let mut clean = serde_json::to_string(&Header {
                settings: settings.clone(),
            })? + "\n";
            for e in own {
                clean += &(serde_json::to_string(&e)? + "\n");
                entries.insert(e.id.clone(), e);
            }
            crate::onnx::io::write_text(&path, &clean)?;
        } else {
            let header = serde_json::to_string(&Header {
                settings: settings.clone(),
            })?;
            crate::onnx::io::write_text(&path, &(header + "\n"))?;
        }
        Ok(Journal { path, entries })
    }

    /// The entry of `id` whose model file is still in `work`.
    pub fn get(&self, id: &str, work: &Path) -> Option<&Entry> {
        self.entries.get(id).filter(|e| work.join(&e.model).is_file())
    }

    /// Records a finished candidate (flushed to disk before returning).
    pub fn append(&mut self, e: Entry) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| self.path.display().to_string())?;
        f.write_all((serde_json::to_string(&e)? + "\n").as_bytes())
            .and_then(|_| f.sync_data())
            .with_context(|| self.path.display().to_string())?;
        self.entries.insert(e.id.clone(), e);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The journals in `work`, in name order: the jobs' (`jobs/*.jsonl`), then the folder's own.
fn journals(work: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(work.join("jobs"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    found.push(work.join(FILE));
    found.retain(|p| p.extension().is_some_and(|e| e == "jsonl") && p.is_file());
    found.sort();
    found
}

/// Refuses a work folder (`flag` names it) holding a journal (its own or a job's) of other
/// settings, creating nothing: a plan written into a folder of another search's jobs would have every job refuse.
pub fn check_folder(work: &Path, settings: &Settings, flag: &str) -> Result<()> {
    for path in journals(work) {
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        check_header(&path, text.lines().next(), settings, flag)?;
    }
    Ok(())
}

/// Refuses a journal whose first line is not a header of these settings; `flag` names the folder
/// (`--work`, `--plan`, `--collect`), or is `--only` for a plan's job.
fn check_header(path: &Path, first: Option<&str>, settings: &Settings, flag: &str) -> Result<()> {
    // A plan's results are collected with the plan's settings: the folder is not to be replaced.
    let collect = "collect with the settings the plan was made with (its collect.sh runs that command)";
    // A job of a plan (`--only`) names its folder with --work.
    let job = flag == "--only";
    let flag = if job { "--work" } else { flag };
    match first.map(serde_json::from_str::<Header>) {
        Some(Ok(h)) if h.settings == *settings => Ok(()),
        // Made before the files' contents were recorded: nothing tells its files from new ones.
        Some(Ok(h)) if h.settings.model_fingerprint.is_none() && settings.model_fingerprint.is_some() => bail!(
            "{}: this work folder was made by an older onnx-compress, which did not record its files' contents (a model or data file replaced at the same path was taken for the same); delete the folder or pass another {flag} folder",
            path.display()
        ),
        Some(Ok(h)) if h.settings.builds != settings.builds => bail!(
            "{}: this work folder's candidates were built by an older onnx-compress ({}), which built some of them differently; delete the folder or pass another {flag} folder",
            path.display(),
            differences(&h.settings, settings)
        ),
        Some(Ok(h)) if h.settings != *settings && flag == "--collect" => bail!(
            "{}: this plan's jobs ran with other settings ({}); {collect}",
            path.display(),
            differences(&h.settings, settings)
        ),
        // A job of a plan (--only): the folder holds the plan's other results.
        Some(Ok(h)) if h.settings != *settings && job => bail!(
            "{}: this plan's folder holds jobs of other settings ({}); run the job with the plan's settings (its line in jobs.txt)",
            path.display(),
            differences(&h.settings, settings)
        ),
        Some(Ok(h)) => bail!(
            "{}: this work folder holds a search with other settings ({}); pass another {flag} folder or delete this one",
            path.display(),
            differences(&h.settings, settings)
        ),
        _ => bail!(
            "{}: not a journal of `auto`; pass another {flag} folder or delete this file",
            path.display()
        ),
    }
}

/// The settings that differ, as `key: old → new`.
fn differences(old: &Settings, new: &Settings) -> String {
    let (a, b) = (
        serde_json::to_value(old).unwrap_or_default(),
        serde_json::to_value(new).unwrap_or_default(),
    );
    let mut out = vec![];
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        // Both sides' keys: a setting left out where it has its old default is on one side only.
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for k in keys {
            let (v, w) = (
                a.get(k).cloned().unwrap_or_default(),
                b.get(k).cloned().unwrap_or_default(),
            );
            if v != w {
                out.push(format!("{k}: {v} → {w}"));
            }
        }
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_tells_files_of_one_size_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        // Past one read buffer, differing in one byte near the end.
        let mut bytes: Vec<u8> = (0..(3 << 20) + 5).map(|i| (i % 251) as u8).collect();
        std::fs::write(&a, &bytes).unwrap();
        std::fs::write(&b, &bytes).unwrap();
        let print = |p: &PathBuf| fingerprint(std::slice::from_ref(p)).unwrap();
        assert_eq!(print(&a), print(&b));
        assert!(print(&a).ends_with(&format!("-{}", bytes.len())));
        let end = bytes.len() - 2;
        bytes[end] ^= 1;
        std::fs::write(&b, &bytes).unwrap();
        assert_ne!(print(&a), print(&b));
        // Two labels flipped, each the top byte of an 8-byte word: a hash of words that only
        // multiplied carried neither change down, and one time in 256 both cancelled.
        for (i, j) in [(7usize, 15usize), (23, 4095), (1 << 20 | 7, 2 << 20 | 7)] {
            let mut two = std::fs::read(&a).unwrap();
            two[i] ^= 1;
            two[j] ^= 1;
            std::fs::write(&b, &two).unwrap();
            assert_ne!(print(&a), print(&b), "bytes {i} and {j}");
        }
        assert_eq!(fingerprint(&[dir.path().join("missing")]), None);
    }

    fn settings(seed: u64) -> Settings {
        Settings {
            tool_version: "x".into(),
            builds: BUILDS,
            model: "/m.onnx".into(),
            model_bytes: 10,
            model_fingerprint: None,
            calib_data_fingerprint: None,
            selection_data_fingerprint: None,
            task: "sst2".into(),
            format: None,
            columns: None,
            labels: None,
            calib_data: "/t.tsv".into(),
            calib_samples: 8,
            selection: 16,
            selection_data: None,
            seed,
            max_length: 128,
            device: "cpu".into(),
            weight_type: "s8".into(),
            max_ffn_fraction: None,
            unpad: true,
            batch_size: None,
        }
    }

    fn entry(id: &str) -> Entry {
        Entry {
            id: id.into(),
            model: format!("{id}.onnx"),
            build_seconds: 1.0,
            params: 5,
            macs: Some(7),
            bytes: 9,
            examples: 16,
            correct: 15,
            baseline_correct: 15,
            dropped_early: false,
            budget: 0.5,
            discordant: Some([1, 1]),
        }
    }

    #[test]
    fn entries_survive_a_restart_and_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), &settings(0), None, "--work").unwrap();
        j.append(entry("a")).unwrap();
        std::fs::write(dir.path().join("a.onnx"), b"m").unwrap();
        // An interruption in the middle of the next line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.write_all(b"{\"id\":\"b\",\"mod").unwrap();
        let mut j = Journal::open(dir.path(), &settings(0), None, "--work").unwrap();
        assert_eq!(j.len(), 1);
        assert_eq!(j.get("a", dir.path()), Some(&entry("a")));
        // A candidate whose model file is gone is not reused.
        j.append(entry("c")).unwrap();
        assert!(j.get("c", dir.path()).is_none());
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            text.lines()
                .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
            "{text}"
        );
    }

    #[test]
    fn a_jobs_journal_is_its_own_and_every_journal_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Journal::open(dir.path(), &settings(0), Some("p0.60"), "--work").unwrap();
        a.append(entry("p0.60")).unwrap();
        let mut b = Journal::open(dir.path(), &settings(0), Some("p0.50"), "--work").unwrap();
        b.append(entry("p0.50")).unwrap();
        for id in ["p0.60", "p0.50"] {
            std::fs::write(dir.path().join(format!("{id}.onnx")), b"m").unwrap();
        }
        let all = Journal::open(dir.path(), &settings(0), None, "--work").unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.get("p0.60", dir.path()).is_some() && all.get("p0.50", dir.path()).is_some());
        assert!(dir.path().join("jobs/p0.60.jsonl").is_file());
        let e = Journal::open(dir.path(), &settings(1), Some("p0.40"), "--work")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("other settings"), "{e}");
    }

    #[test]
    fn other_settings_are_refused_with_what_differs() {
        let dir = tempfile::tempdir().unwrap();
        Journal::open(dir.path(), &settings(0), None, "--work").unwrap();
        let e = Journal::open(dir.path(), &settings(3), None, "--work")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("seed: 0 → 3") && e.contains("--work"), "{e}");
        // A setting written only where it is not its default is named too.
        let e = Journal::open(
            dir.path(),
            &Settings {
                batch_size: Some(8),
                ..settings(0)
            },
            None,
            "--work",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("batch_size: null → 8"), "{e}");
        // A journal from before the files' contents were recorded: said so, not as other settings.
        let e = Journal::open(
            dir.path(),
            &Settings {
                model_fingerprint: Some("x".into()),
                ..settings(0)
            },
            None,
            "--work",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("made by an older onnx-compress, which did not record its files' contents")
                && !e.contains("null"),
            "{e}"
        );
        // A plan's job under other settings: run it as the plan says, not in another folder.
        let e = Journal::open(dir.path(), &settings(3), Some("p0.60"), "--only")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("its line in jobs.txt") && !e.contains("delete"), "{e}");
        // Collecting a plan's results with other settings: collect with the plan's, not another
        // folder (the plan's results are in this one).
        let e = Journal::open(dir.path(), &settings(3), None, "--collect")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("seed: 0 → 3") && e.contains("the settings the plan was made with") && !e.contains("another"),
            "{e}"
        );
        // A journal from before the build number: its candidates are not taken.
        let old = tempfile::tempdir().unwrap();
        let mut header = serde_json::to_value(Header { settings: settings(0) }).unwrap();
        header["settings"].as_object_mut().unwrap().remove("builds");
        std::fs::write(old.path().join(FILE), format!("{header}\n")).unwrap();
        let e = Journal::open(old.path(), &settings(0), None, "--work")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("built by an older onnx-compress (builds: 0 → 2)") && e.contains("delete"),
            "{e}"
        );
        // The user's columns choose which texts and labels are read: another column is refused.
        let own = |label: &str| Settings {
            task: "none".into(),
            columns: Some(crate::data::Columns {
                text: Some("review".into()),
                pair: None,
                label: Some(label.into()),
                named_in: None,
            }),
            ..settings(0)
        };
        let dir = tempfile::tempdir().unwrap();
        Journal::open(dir.path(), &own("stars"), None, "--work").unwrap();
        Journal::open(dir.path(), &own("stars"), None, "--work").unwrap();
        let e = Journal::open(dir.path(), &own("sentiment"), None, "--work")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(r#"columns: {"label":"stars","text":"review"} → {"label":"sentiment","text":"review"}"#),
            "{e}"
        );
    }
}
