//! How names and values are matched: `--exclude` patterns (`*`/`?` globs, else substrings).

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
    assert!(pattern_matches("*attention*", "/encoder/layer.0/attention/self/query/MatMul"));
    assert!(!pattern_matches("*attention", "/encoder/layer.0/attention/self/query/MatMul"));
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
