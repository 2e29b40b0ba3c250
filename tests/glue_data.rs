//! GLUE readers on a written QQP file and on the real SST-2 and MRPC files in `../shared`.

use std::io::Write;
use std::path::{Path, PathBuf};

use onnx_compress::glue::*;

/// `../shared/data/glue`, or `None` (after printing a SKIP line) when it is absent outside CI.
/// Under CI (`CI=true`) a missing `../shared` is a failure.
fn shared_glue_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/glue");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("../shared is required under CI, but {} was not found", dir.display());
    }
    // Written to stderr directly (not with eprintln!) so that the test harness does not capture it.
    let _ = writeln!(std::io::stderr(), "SKIP: ../shared/data/glue not found");
    None
}

fn count_class(data: &Dataset, class: usize) -> usize {
    data.examples.iter().filter(|e| e.label == Label::Class(class)).count()
}

#[test]
fn reads_a_written_qqp_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("QQP").join("dev.tsv");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n\
         201359\t303345\t303346\tWhy are African-Americans so beautiful?\tWhy are hispanics so beautiful?\t0\n\
         263843\t69383\t380476\tI want to pursue PhD in Computer Science about social network, what is the open problem?\tI handle social media for a non-profit. What are the \"best\" ways?\t0\n\
         172974\t266948\t175089\tIs there a reason why we should travel alone?\tWhat are some reasons to travel alone?\t1\n",
    )
    .unwrap();

    assert_eq!(Task::Qqp.data_file(dir.path(), "dev").unwrap(), path);
    let data = read_tsv(Task::Qqp, &path).unwrap();
    assert_eq!(data.task, Task::Qqp);
    assert_eq!(data.path, path);
    assert_eq!(data.len(), 3);
    assert_eq!(data.examples[0].text_a, "Why are African-Americans so beautiful?");
    assert_eq!(
        data.examples[1].text_b.as_deref(),
        Some("I handle social media for a non-profit. What are the \"best\" ways?")
    );
    let labels: Vec<Label> = data.examples.iter().map(|e| e.label).collect();
    assert_eq!(labels, vec![Label::Class(0), Label::Class(0), Label::Class(1)]);
}

#[test]
fn reads_shared_sst2_dev() {
    let Some(glue) = shared_glue_dir() else {
        return;
    };
    let path = Task::Sst2.data_file(&glue, "dev").unwrap();
    let header = std::fs::read_to_string(&path).unwrap();
    assert_eq!(Task::infer_from_header(&header), Some(Task::Sst2));

    let data = read_tsv(Task::Sst2, &path).unwrap();
    assert_eq!(data.len(), 872);
    assert_eq!(count_class(&data, 1), 444);
    assert_eq!(count_class(&data, 0), 428);
    assert_eq!(
        data.examples[0].text_a,
        "it 's a charming and often affecting journey . "
    );
    assert_eq!(data.examples[0].text_b, None);
    assert_eq!(data.examples[0].label, Label::Class(1));
    assert!(data.examples.iter().all(|e| e.text_a.ends_with(' ')));
}

#[test]
fn reads_shared_mrpc_dev() {
    let Some(glue) = shared_glue_dir() else {
        return;
    };
    let path = Task::Mrpc.data_file(&glue, "dev").unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with('\u{feff}'), "MRPC dev.tsv has a BOM");
    assert_eq!(Task::infer_from_header(&text), Some(Task::Mrpc));

    let data = read_tsv(Task::Mrpc, &path).unwrap();
    assert_eq!(data.len(), 408);
    assert_eq!(count_class(&data, 1), 279);
    let first = &data.examples[0];
    assert_eq!(
        first.text_a,
        "He said the foodservice pie business doesn't fit the company's long-term growth strategy."
    );
    assert!(first
        .text_b
        .as_deref()
        .unwrap()
        .starts_with("\"The foodservice pie business"));
    assert_eq!(first.label, Label::Class(1));
}

#[test]
fn reads_shared_mrpc_hf_text_dev() {
    let Some(glue) = shared_glue_dir() else {
        return;
    };
    let data = read_tsv(Task::Mrpc, &glue.join("mrpc/dev.hf_text.tsv")).unwrap();
    assert_eq!(data.len(), 408);
    assert_eq!(count_class(&data, 1), 279);
}

#[test]
fn reads_shared_train_sets() {
    let Some(glue) = shared_glue_dir() else {
        return;
    };
    let sst2 = read_tsv(Task::Sst2, &Task::Sst2.data_file(&glue, "train").unwrap()).unwrap();
    assert_eq!(sst2.len(), 67_349);
    assert_eq!(count_class(&sst2, 1), 37_569);

    let mrpc = read_tsv(Task::Mrpc, &Task::Mrpc.data_file(&glue, "train").unwrap()).unwrap();
    assert_eq!(mrpc.len(), 3_668);
    assert_eq!(count_class(&mrpc, 1), 2_474);
}
