//! How names and values are matched: `--exclude` patterns (`*`/`?` globs, else substrings) and
//! `Identity` aliases followed back to the constant they stand for.

use onnx_compress::onnx::build::{node, value_info};
use onnx_compress::onnx::proto::tensor_proto::DataType;
use onnx_compress::onnx::tensor::from_f32;
use onnx_compress::onnx::{GraphIndex, GraphProto};
use onnx_compress::passes::quantize::pattern_matches;

/// The matcher as first written (exponential on many `*`): the reference for the semantics.
fn reference(pattern: &str, name: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return name.contains(pattern);
    }
    fn glob(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
            Some(('?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    glob(&p, &s)
}

/// Every string of length `0..=max` over `alphabet`.
fn all_strings(alphabet: &[char], max: usize) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut last = vec![String::new()];
    for _ in 0..max {
        last = last
            .iter()
            .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
            .collect();
        out.extend(last.iter().cloned());
    }
    out
}

#[test]
fn exclude_patterns_match_as_before_on_every_small_case() {
    let patterns = all_strings(&['a', 'b', '*', '?'], 5);
    let names = all_strings(&['a', 'b'], 6);
    for p in &patterns {
        for n in &names {
            assert_eq!(pattern_matches(p, n), reference(p, n), "pattern {p:?} on {n:?}");
        }
    }
    // Multi-byte characters count as one for `?`.
    assert!(pattern_matches("l?yer", "läyer"));
    assert!(pattern_matches(
        "*attention*",
        "/encoder/layer.0/attention/self/query/MatMul"
    ));
    assert!(!pattern_matches(
        "*attention",
        "/encoder/layer.0/attention/self/query/MatMul"
    ));
    assert!(pattern_matches("query", "/encoder/layer.0/attention/self/query/MatMul"));
}

/// Before the two-pointer matcher, this pattern against 200 `a`s took exponential time.
#[test]
fn exclude_pattern_with_many_stars_answers_at_once() {
    let pattern = "a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
    let many_a = "a".repeat(200);
    assert!(!pattern_matches(pattern, &many_a));
    assert!(pattern_matches(pattern, &format!("{many_a}b")));
    assert!(!pattern_matches(&"*a".repeat(40), &"a".repeat(39)));
    assert!(pattern_matches(&format!("{}?", "*a".repeat(40)), &"a".repeat(1000)));
}

/// `W` behind `n` Identity nodes, consumed by a MatMul.
fn identity_chain(n: usize) -> GraphProto {
    let names: Vec<String> = (0..=n)
        .map(|i| if i == 0 { "W".to_string() } else { format!("alias{i}") })
        .collect();
    let mut nodes: Vec<_> = (1..=n)
        .map(|i| node("Identity", &format!("id{i}"), &[&names[i - 1]], &[&names[i]]))
        .collect();
    nodes.push(node("MatMul", "matmul", &["x", &names[n]], &["y"]));
    GraphProto {
        name: Some("chain".into()),
        node: nodes,
        initializer: vec![from_f32("W", &[2, 2], &[1.0, 2.0, 3.0, 4.0])],
        input: vec![value_info("x", DataType::Float, &[Ok(1), Ok(2)])],
        output: vec![value_info("y", DataType::Float, &[Ok(1), Ok(2)])],
        ..Default::default()
    }
}

#[test]
fn identity_chains_are_followed_to_the_end() {
    let graph = identity_chain(40);
    let ix = GraphIndex::new(&graph);
    assert_eq!(ix.resolve("alias40"), "W");
    assert_eq!(ix.resolve("alias17"), "W");
    assert_eq!(ix.resolve("x"), "x");
    assert!(
        ix.constant("alias40").is_some(),
        "the weight behind 40 Identities is a constant"
    );
    assert_eq!(ix.constant_name("alias40").as_deref(), Some("W"));
}

#[test]
fn identity_cycles_resolve_to_themselves() {
    let graph = GraphProto {
        name: Some("cycle".into()),
        node: vec![
            node("Identity", "ab", &["a"], &["b"]),
            node("Identity", "bc", &["b"], &["c"]),
            node("Identity", "ca", &["c"], &["a"]),
            node("Identity", "cd", &["c"], &["d"]),
        ],
        ..Default::default()
    };
    let ix = GraphIndex::new(&graph);
    assert_eq!(ix.resolve("a"), "a");
    assert_eq!(ix.resolve("d"), "d");
    assert!(ix.constant("d").is_none());
}
