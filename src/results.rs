//! A command's folder of results (`bench --out`, `sensitivity --out`, `auto`'s work folder):
//! checked before the work, written file by file with the files written named on a failure.

use std::path::{Path, PathBuf};

/// Checks, before the work, that the files `names` can be written into the folder `dir`
/// (`flag`, e.g. `--out`, names it in errors) without replacing a file the command reads
/// (`reads`: the path and what it is) and without meeting a folder or a device where a file goes.
pub fn check_results(dir: &Path, flag: &str, names: &[&str], reads: &[(PathBuf, String)]) -> anyhow::Result<()> {
    use anyhow::Context;
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!(
            "{flag} {}: a file, not a folder; name a folder for the results (made when missing)",
            dir.display()
        );
    }
    for name in names {
        let p = dir.join(name);
        for (input, what) in reads {
            crate::onnx::io::ensure_not_read(input, what, &p).with_context(|| format!("{flag} {}", dir.display()))?;
        }
        if p.is_dir() {
            anyhow::bail!(
                "{flag} {}: {} is a folder, where a result file goes; remove it or name another folder",
                dir.display(),
                p.display()
            );
        }
    }
    // A folder that takes no files is found now, not after the work.
    crate::onnx::io::report_folder(dir).map_err(|e| anyhow::anyhow!("{flag} {e}"))?;
    if dir.is_dir() {
        for name in names {
            crate::onnx::io::target_folder(&dir.join(name)).with_context(|| format!("{flag} {}", dir.display()))?;
        }
    }
    Ok(())
}

/// Writes each of `texts` (a file name in `dir` and its text), then `charts` (each adding its
/// files to the list it is given), into the folder `dir` (made when missing): the files
/// written, or an error that names those written before it.
pub fn write_results(
    dir: &Path,
    flag: &str,
    texts: &[(&str, String)],
    charts: &dyn Fn(&mut Vec<PathBuf>) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("{flag} {}", dir.display()))?;
    let mut files = vec![];
    let mut each = || -> anyhow::Result<()> {
        for (name, text) in texts {
            let p = dir.join(name);
            crate::onnx::io::write_text(&p, text)?;
            files.push(p);
        }
        charts(&mut files)
    };
    match each() {
        Ok(()) => Ok(files),
        Err(e) if files.is_empty() => Err(e),
        Err(e) => Err(anyhow::anyhow!(
            "{e:#} (written before it: {})",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}
