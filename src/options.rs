//! Option errors and named choices shared by every front end (the CLI, recipes).
//!
//! A pass validates its options once and reports a bad one as an [`OptionError`]: the field it
//! concerns and a message that refers to fields as `` `field` ``. The messages name no CLI flag
//! and no recipe key: each front end renders the field names in its own words (`--k-min`,
//! `rmt_lowrank.k_min (line 7)`) with [`OptionError::render`]. `Display` renders them as the
//! command line does ([`flag`]), the form a library caller most often shows.

use std::fmt;

/// A bad option value: `field` is the option it concerns (snake_case, as in the options
/// structs), `message` says what is wrong, naming fields as `` `field` ``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError {
    pub field: &'static str,
    pub message: String,
}

impl OptionError {
    /// An error about `field`; `message` names fields in backticks (`` `k_max` ``).
    pub fn new(field: &'static str, message: impl Into<String>) -> OptionError {
        OptionError {
            field,
            message: message.into(),
        }
    }

    /// The message with each `` `field` `` replaced by `name(field)`.
    pub fn render(&self, name: &dyn Fn(&str) -> String) -> String {
        let mut out = String::with_capacity(self.message.len() + 16);
        let mut rest = self.message.as_str();
        while let Some(start) = rest.find('`') {
            let Some(len) = rest[start + 1..].find('`') else { break };
            let field = &rest[start + 1..start + 1 + len];
            out.push_str(&rest[..start]);
            if !field.is_empty()
                && field
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                out.push_str(&name(field));
            } else {
                out.push('`');
                out.push_str(field);
                out.push('`');
            }
            rest = &rest[start + 2 + len..];
        }
        out.push_str(rest);
        out
    }
}

/// An option field as the command line's flag: `k_min` → `--k-min`.
pub fn flag(field: &str) -> String {
    format!("--{}", field.replace('_', "-"))
}

impl fmt::Display for OptionError {
    /// Fields named as flags (see [`flag`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(&flag))
    }
}

impl std::error::Error for OptionError {}

/// An enum of named choices (`l1`, `random`, ...): the names front ends accept and a one-line
/// help per name, without the library depending on a command-line parser.
pub trait Named: Sized + Copy + 'static {
    /// Every value with its name and help, in the order shown to users.
    const ALL: &'static [(Self, &'static str, &'static str)];

    /// The name of `self`.
    fn name(self) -> &'static str
    where
        Self: PartialEq,
    {
        Self::ALL.iter().find(|(v, _, _)| *v == self).map_or("?", |(_, n, _)| n)
    }

    /// The value named `name` (case-insensitive; `-` and `_` alike).
    fn from_name(name: &str) -> Option<Self> {
        let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
        let want = norm(name);
        Self::ALL.iter().find(|(_, n, _)| norm(n) == want).map(|(v, _, _)| *v)
    }

    /// The names, comma-separated (for error messages).
    fn names() -> String {
        Self::ALL.iter().map(|(_, n, _)| *n).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fields_in_the_front_ends_words() {
        let e = OptionError::new("k_min", "`k_min` 9 is above `k_max` 3");
        let flag = |f: &str| format!("--{}", f.replace('_', "-"));
        assert_eq!(e.render(&flag), "--k-min 9 is above --k-max 3");
        assert_eq!(
            e.render(&|f| format!("rmt_lowrank.{f}")),
            "rmt_lowrank.k_min 9 is above rmt_lowrank.k_max 3"
        );
        assert_eq!(e.to_string(), "--k-min 9 is above --k-max 3");
        assert_eq!(e.message, "`k_min` 9 is above `k_max` 3");
        // Backticks around something that is not a field name are kept; an unclosed one too.
        let e = OptionError::new("exclude", "`exclude` 'a`b': no match for `Gemm`s `");
        assert_eq!(e.render(&flag), "--exclude 'a`b': no match for `Gemm`s `");
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Colour {
        Red,
        DarkBlue,
    }
    impl Named for Colour {
        const ALL: &'static [(Self, &'static str, &'static str)] =
            &[(Colour::Red, "red", "warm"), (Colour::DarkBlue, "dark_blue", "cold")];
    }

    #[test]
    fn named_choices_parse_and_print() {
        assert_eq!(Colour::from_name("dark-blue"), Some(Colour::DarkBlue));
        assert_eq!(Colour::from_name("RED"), Some(Colour::Red));
        assert_eq!(Colour::from_name("green"), None);
        assert_eq!(Colour::DarkBlue.name(), "dark_blue");
        assert_eq!(Colour::names(), "red, dark_blue");
    }
}
