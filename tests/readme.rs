//! The README holds line by line: every fenced `onnx-compress` command runs (on the shared models,
//! placeholders substituted) and exits 0; an example shown with its output (`$ ` lines) prints
//! that output, line by line in order (`...` stands for anything, timings may differ); and the
//! Makefile snippet is the Makefile's own chain block, and a recipe shown is the configs' own.
//!
//! Commands that take over a minute on 2 cores (calibrated pruning and calibrated low rank) are
//! listed and passed over with a visible note; the pass tests cover them.

mod common;

use std::path::Path;

use common::{have_ort, s, text};
use onnx_compress::testkit::shared::require;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One fenced command of the README: the line it starts on, its words, and the output shown
/// after it (for `$ ` examples).
struct Example {
    line: usize,
    words: Vec<String>,
    shown: Vec<String>,
}

/// The fenced code blocks: (language, first line number, lines).
fn fenced_blocks(readme: &str) -> Vec<(String, usize, Vec<String>)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, usize, Vec<String>)> = None;
    for (i, line) in readme.lines().enumerate() {
        if let Some(lang) = line.strip_prefix("```") {
            match open.take() {
                Some(block) => blocks.push(block),
                None => open = Some((lang.trim().to_string(), i + 2, Vec::new())),
            }
        } else if let Some((_, _, lines)) = &mut open {
            lines.push(line.to_string());
        }
    }
    assert!(open.is_none(), "README.md: a fenced block is not closed");
    blocks
}

/// The `onnx-compress` commands of the shell and plain blocks, `\` continuations joined.
fn examples(readme: &str) -> Vec<Example> {
    let mut out: Vec<Example> = Vec::new();
    for (lang, first, lines) in fenced_blocks(readme) {
        if !(lang.is_empty() || lang == "sh") {
            continue;
        }
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i].trim_end();
            let (prompt, cmd) = match line.strip_prefix("$ ") {
                Some(c) => (true, c),
                None => (false, line),
            };
            let cmd = cmd.trim_start();
            let start = first + i;
            i += 1;
            let Some(rest) = cmd
                .strip_prefix("target/release/onnx-compress ")
                .or_else(|| cmd.strip_prefix("onnx-compress "))
            else {
                assert!(
                    !prompt,
                    "README.md line {start}: `$ {cmd}` is not an onnx-compress command"
                );
                continue;
            };
            let mut full = rest.to_string();
            while full.ends_with('\\') && i < lines.len() {
                full.pop();
                full.push(' ');
                full.push_str(lines[i].trim());
                i += 1;
            }
            assert!(
                !full.contains(['"', '\'', '|', '>', '$']),
                "README.md line {start}: `{full}` needs a shell; extend tests/readme.rs"
            );
            let mut shown = Vec::new();
            if prompt {
                while i < lines.len() && !lines[i].starts_with("$ ") {
                    shown.push(lines[i].clone());
                    i += 1;
                }
            }
            out.push(Example {
                line: start,
                words: full.split_whitespace().map(str::to_string).collect(),
                shown,
            });
        }
    }
    out
}

/// One piece of a README output line.
enum Tok {
    Lit(char),
    /// `...`: anything.
    Any,
    /// A time or share (`0.05 s`, `0.8%`): any number.
    Number,
}

fn tokens(want: &str) -> Vec<Tok> {
    let c: Vec<char> = want.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if c[i..].starts_with(&['.', '.', '.']) {
            toks.push(Tok::Any);
            i += 3;
            continue;
        }
        let boundary = i == 0 || !c[i - 1].is_alphanumeric();
        let n = c[i..].iter().take_while(|x| x.is_ascii_digit() || **x == '.').count();
        let unit = c[i + n..].starts_with(&[' ', 's']) || c[i + n..].starts_with(&['%']);
        if boundary && n > 0 && c[i].is_ascii_digit() && unit {
            toks.push(Tok::Number);
            i += n;
            continue;
        }
        toks.push(Tok::Lit(c[i]));
        i += 1;
    }
    toks
}

/// Whether `got` matches the README line `want`: `...` is anything, and a time (`0.05 s`) or a
/// share (`0.8%`) may be any number.
fn line_matches(want: &str, got: &str) -> bool {
    fn go(toks: &[Tok], t: &[char]) -> bool {
        match toks.first() {
            None => t.is_empty(),
            Some(Tok::Lit(c)) => t.first() == Some(c) && go(&toks[1..], &t[1..]),
            Some(Tok::Any) => (0..=t.len()).any(|k| go(&toks[1..], &t[k..])),
            Some(Tok::Number) => {
                let n = t.iter().take_while(|c| c.is_ascii_digit() || **c == '.').count();
                (1..=n).any(|k| go(&toks[1..], &t[k..]))
            }
        }
    }
    let got: Vec<char> = got.chars().collect();
    go(&tokens(want), &got)
}

/// Checks that every shown line (but `...` alone, which skips) matches a line of `stdout`, in order.
fn assert_shows(ex: &Example, stdout: &str) {
    let got: Vec<&str> = stdout.lines().collect();
    let mut at = 0;
    for want in ex.shown.iter().map(|l| l.trim_end()) {
        if want == "..." || want.is_empty() {
            continue;
        }
        match got[at..].iter().position(|g| line_matches(want, g.trim_end())) {
            Some(k) => at += k + 1,
            None => panic!(
                "README.md line {}: `{}` does not print\n  {want}\n(after line {at} of its output):\n{stdout}",
                ex.line,
                ex.words.join(" ")
            ),
        }
    }
}

#[test]
fn the_matcher_reads_readme_patterns() {
    assert!(line_matches("a ... b", "a 1 2 3 b"));
    assert!(line_matches("pass x (0.05 s): y", "pass x (0.31 s): y"));
    assert!(line_matches(
        "t 0.046 s (0.8% of forward ... s)",
        "t 0.1 s (12.5% of forward 3 s)"
    ));
    assert!(!line_matches("accuracy 0.8704", "accuracy 0.8705"));
    assert!(!line_matches("a (b)", "a b"));
}

/// Why a README command is passed over, if it is.
fn too_slow(words: &[String]) -> Option<&'static str> {
    let calibrated = words.iter().any(|w| w == "--calib-data");
    if words.windows(2).any(|w| w[0] == "--device" && w[1] == "cuda") {
        return Some("needs a GPU and a build with --features cuda (bench/RESULTS.md, \"On CUDA\")");
    }
    match words.first().map(String::as_str) {
        Some("prune") if calibrated => Some("calibrated pruning takes over a minute"),
        Some("lowrank") if calibrated => Some("calibrated low rank takes about a minute"),
        Some("sensitivity") => Some("sensitivity takes minutes (tests/diagnostics.rs runs a short one)"),
        Some("auto") => Some("a search takes many minutes (tests/auto.rs runs small ones)"),
        _ => None,
    }
}

#[test]
fn readme_commands_run_and_print_what_it_shows() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let examples = examples(&readme);
    assert!(
        examples.len() >= 10,
        "README.md: found only {} commands; has the README's form changed?",
        examples.len()
    );
    let (Some(sst2), Some(mrpc)) = (
        require("models/minilm-l6-sst2/model.onnx", "README commands"),
        require("models/minilm-l6-mrpc/model.onnx", "README commands"),
    ) else {
        return;
    };
    if !have_ort("README commands") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for ex in &examples {
        if let Some(why) = too_slow(&ex.words) {
            eprintln!("SKIP: README.md line {}: {} ({why})", ex.line, ex.words.join(" "));
            continue;
        }
        let mrpc_task = ex.words.iter().any(|w| w.contains("mrpc"));
        let args: Vec<String> = ex
            .words
            .iter()
            .map(|w| match w.as_str() {
                "in.onnx" => s(if mrpc_task { &mrpc } else { &sst2 }).to_string(),
                // One file per name, as in a shell: a later command reads what an earlier wrote.
                w if w.starts_with("out") && w.ends_with(".onnx") => s(&dir.path().join(w)).to_string(),
                w => w.to_string(),
            })
            .collect();
        let out = common::bin()
            .current_dir(ROOT)
            .env("ORT_DYLIB_PATH", Path::new(ROOT).join(common::ORT_LIB))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README.md line {}: `onnx-compress {}` failed:\n{}",
            ex.line,
            ex.words.join(" "),
            text(&out.stderr)
        );
        assert_shows(ex, &text(&out.stdout));
    }
}

/// The Makefile lines between the chain markers.
fn makefile_chain(makefile: &str) -> Vec<String> {
    let begin = "# >>> chain example";
    let end = "# <<< chain example";
    let lines: Vec<&str> = makefile.lines().collect();
    let a = lines.iter().position(|l| l.starts_with(begin));
    let b = lines.iter().position(|l| l.starts_with(end));
    let (Some(a), Some(b)) = (a, b) else {
        panic!("Makefile: the `{begin}` / `{end}` markers are missing");
    };
    lines[a + 1..b].iter().map(|l| l.to_string()).collect()
}

#[test]
fn readme_makefile_snippet_is_the_makefiles_own() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let makefile = std::fs::read_to_string(Path::new(ROOT).join("Makefile")).unwrap();
    let snippets: Vec<_> = fenced_blocks(&readme)
        .into_iter()
        .filter(|(lang, _, _)| lang == "make")
        .collect();
    assert_eq!(snippets.len(), 1, "README.md: expected one ```make block");
    let (_, line, snippet) = &snippets[0];
    let own = makefile_chain(&makefile);
    for (i, (a, b)) in snippet.iter().zip(&own).enumerate() {
        assert_eq!(
            a,
            b,
            "README.md line {}: differs from the Makefile's chain block",
            line + i
        );
    }
    assert_eq!(
        snippet.len(),
        own.len(),
        "README.md line {line}: the make block and the Makefile's chain block differ in length"
    );
}

/// A ```yaml block that names a recipe in its first comment (`# configs/...yaml`) holds that
/// recipe's keys and values (comments aside).
#[test]
fn readme_recipes_are_the_configs_own() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let mut checked = 0;
    for (lang, line, lines) in fenced_blocks(&readme) {
        let Some(name) = (lang == "yaml")
            .then(|| lines.first())
            .flatten()
            .and_then(|l| l.strip_prefix("# "))
            .and_then(|l| l.split([',', ' ']).next())
            .filter(|p| p.starts_with("configs/"))
        else {
            continue;
        };
        let shown: serde_yaml::Value =
            serde_yaml::from_str(&lines.join("\n")).unwrap_or_else(|e| panic!("README.md line {line}: not YAML: {e}"));
        let own: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(Path::new(ROOT).join(name)).unwrap()).unwrap();
        assert_eq!(shown, own, "README.md line {line}: differs from {name}");
        checked += 1;
    }
    assert!(checked >= 1, "README.md: no ```yaml block names a recipe in configs/");
}
