//! Writes the fuzzing seed corpora under `fuzz/seeds/<target>/` (see `fuzz/README.md`):
//! small synthetic BERTs in every layout `testkit::synth` builds, truncated and bit-flipped
//! copies of them, the first kilobytes of the shared models (when `../shared` is present), and
//! GLUE TSV samples for every task layout.
//!
//! ```sh
//! cargo run --example fuzz_seeds   # writes fuzz/seeds/{onnx_decode,tsv_reader,prune_plan,graph_edit}
//! ```

use std::path::{Path, PathBuf};

use onnx_compress::testkit::synth::{tiny_bert, GeluStyle, ShapeStyle, SynthOptions};
use prost::Message;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()));
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let dirs = ["onnx_decode", "tsv_reader", "prune_plan", "graph_edit"].map(|t| {
        let d = root.join(t);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    });
    let [decode, tsv, prune, edits] = &dirs;

    // Synthetic models: every shape style × GELU style, fused attention, Identity aliases; kept
    // tiny (1–2 layers, 2 heads of 2, FFN 4, vocabulary 8) so that the fuzzer's inputs stay short.
    let mut models = Vec::new();
    for (si, shapes) in [
        ShapeStyle::ConcatInferred,
        ShapeStyle::ConcatExplicit,
        ShapeStyle::SharedInitializer,
        ShapeStyle::ConstantPerReshape,
    ]
    .into_iter()
    .enumerate()
    {
        for (gi, gelu) in [GeluStyle::Erf, GeluStyle::Op, GeluStyle::Tanh].into_iter().enumerate() {
            for (fused, aliases) in [(false, false), (false, true), (true, false)] {
                let o = SynthOptions {
                    layers: 1 + (si + gi) % 2,
                    heads: 2,
                    head_size: 2,
                    ffn: 4,
                    vocab: 8,
                    max_positions: 4,
                    labels: 2,
                    shapes,
                    gelu,
                    identity_aliases: aliases,
                    fused_attention: fused,
                    nan_guard: false,
                    embedding_size: None,
                    seed: (si * 10 + gi) as u64 + 1,
                };
                let name = format!(
                    "synth-{shapes:?}-{gelu:?}{}{}",
                    if fused { "-fused" } else { "" },
                    if aliases { "-aliases" } else { "" }
                )
                .to_lowercase();
                models.push((name, tiny_bert(&o).encode_to_vec()));
            }
        }
    }
    for (i, (name, bytes)) in models.iter().enumerate() {
        write(decode, &format!("{name}.onnx"), bytes);
        // prune_plan: 4 option bytes (heads, FFN fractions ×256, strategy bit, seed) + the model.
        let opts = [(i as u8).wrapping_mul(37), (i as u8).wrapping_mul(59), i as u8, i as u8];
        write(prune, &format!("{name}.bin"), &[&opts[..], bytes].concat());
    }
    // Truncated and bit-flipped copies of a few of them.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (name, bytes) in models.iter().step_by(6) {
        for cut in [bytes.len() / 3, bytes.len() * 9 / 10, bytes.len() - 1] {
            write(decode, &format!("{name}-cut{cut}.onnx"), &bytes[..cut]);
        }
        for k in 0..3 {
            let mut b = bytes.clone();
            for _ in 0..=k {
                let at = (next() % b.len() as u64) as usize;
                b[at] ^= 1 << (next() % 8);
            }
            write(decode, &format!("{name}-flip{k}.onnx"), &b);
        }
    }
    // The first kilobytes of the real models: their header and first nodes (the files are 91 MB).
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/models");
    for m in ["minilm-l6-sst2", "minilm-l6-mrpc"] {
        if let Ok(bytes) = std::fs::read(shared.join(m).join("model.onnx")) {
            for kb in [1, 4, 16] {
                write(
                    decode,
                    &format!("{m}-head{kb}k.onnx"),
                    &bytes[..(kb << 10).min(bytes.len())],
                );
            }
        }
    }

    // graph_edit: a layout byte, then edits of 4 bytes each (see fuzz_targets/graph_edit.rs).
    for layout in (0u8..128).step_by(5) {
        write(edits, &format!("layout{layout:03}.bin"), &[layout]);
        for k in 0..2 {
            let mut b = vec![layout];
            b.extend((0..4 * (1 + 2 * k)).map(|_| next() as u8));
            write(edits, &format!("layout{layout:03}-edits{k}.bin"), &b);
        }
    }

    // GLUE TSV: each task's layout, plus BOM, CRLF, empty lines, quotes, bad labels.
    let samples: &[(&str, &str)] = &[
        ("sst2", "sentence\tlabel\nit 's a charming and often affecting journey . \t1\nunflinchingly bleak \t0\n"),
        ("sst2-crlf-bom", "\u{feff}sentence\tlabel\r\ngood \t1\r\n\r\nbad \t0\r\n"),
        ("sst2-badlabel", "sentence\tlabel\ngood \t2\n"),
        (
            "mrpc",
            "\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t702876\t702977\tAmrozi accused his brother \"the witness\" .\tReferring to him as only \" the witness \" .\n0\t2108705\t2108831\tYucaipa owned Dominick 's .\tYucaipa bought Dominick 's in 1995 .\n",
        ),
        (
            "qqp",
            "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t1\t2\tHow do I learn Rust?\tWhat is the best way to learn Rust?\t1\n2\t3\t4\tWhy?\tHow?\t0\n",
        ),
        ("cola", "gj04\t1\t\tOur friends won't buy this analysis.\ngj04\t0\t*\tOne more pseudo generalization.\n"),
        ("qnli", "index\tquestion\tsentence\tlabel\n0\tWhat?\tThis.\tentailment\n1\tWho?\tThat.\tnot_entailment\n"),
        ("rte", "index\tsentence1\tsentence2\tlabel\n0\tA cat.\tAn animal.\tentailment\n"),
        (
            "mnli",
            "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n0\t1\t1a\tfiction\t(\t(\t(\t(\tA man.\tA person.\tentailment\tentailment\n",
        ),
        ("stsb", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane.\tAn air plane.\t5.000\n"),
        ("wnli", "index\tsentence1\tsentence2\tlabel\n0\tI stuck a pin.\tI stuck the pin.\t1\n"),
    ];
    for (name, text) in samples {
        write(tsv, &format!("{name}.tsv"), text.as_bytes());
    }
    let glue = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/glue");
    for t in ["sst2", "mrpc"] {
        if let Ok(bytes) = std::fs::read(glue.join(t).join("dev.tsv")) {
            write(tsv, &format!("{t}-dev-head.tsv"), &bytes[..bytes.len().min(2048)]);
        }
    }

    for d in &dirs {
        let (n, size) = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .fold((0, 0), |(n, s), e| (n + 1, s + e.metadata().unwrap().len()));
        println!("{}: {n} files, {size} bytes", d.display());
    }
}
