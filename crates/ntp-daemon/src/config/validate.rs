//! `ntpd-sim validate --config FILE`: every problem of a config file, each
//! with its key and line, rather than the first one that stops `serve`.
//!
//! Each key is deserialized on its own (unknown keys and tables, wrong
//! types), then the whole file is merged as `serve` would merge it, and
//! each range error found is set aside and the merge tried again, so one
//! bad value does not hide the next.

use std::fmt;
use std::ops::Range;
use std::path::Path;

use toml_edit::ImDocument;

use super::{ConfigError, FileConfig, Overrides, ServeConfig};

/// One problem, at a line of the file when it can be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Line, from 1.
    pub line: Option<usize>,
    /// The key, `section.key` (or the section alone).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Reads and checks `path`. An unreadable file is an error; problems are
/// the result.
pub fn validate_file(path: &Path) -> Result<Vec<Problem>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    Ok(validate(&text))
}

/// Every problem of config `text` (empty: the file is good).
#[must_use]
pub fn validate(text: &str) -> Vec<Problem> {
    let document = match ImDocument::parse(text) {
        Ok(document) => document,
        Err(error) => {
            let line = error.span().map(|span| line_of(text, &span));
            return vec![Problem { line, key: "(syntax)".into(), message: error.message().trim().to_string() }];
        }
    };
    let table: toml::Table = match toml::from_str(text) {
        Ok(table) => table,
        Err(error) => return vec![Problem { line: None, key: "(syntax)".into(), message: error.to_string() }],
    };
    let locate = |section: &str, key: Option<&str>| -> Option<usize> {
        let (section_key, item) = document.as_table().get_key_value(section)?;
        let span = match key {
            Some(key) => item.as_table_like()?.get_key_value(key)?.0.span(),
            None => section_key.span(),
        }?;
        Some(line_of(text, &span))
    };
    let mut problems = Vec::new();
    let mut good = toml::Table::new();
    for (section, value) in &table {
        let toml::Value::Table(keys) = value else {
            // An array of tables (`[[refclock]]`) is checked whole.
            match try_file(section, value.clone()) {
                Ok(()) => drop(good.insert(section.clone(), value.clone())),
                Err(message) => problems.push(Problem { line: locate(section, None), key: section.clone(), message }),
            }
            continue;
        };
        if let Err(message) = try_file(section, toml::Value::Table(toml::Table::new())) {
            problems.push(Problem { line: locate(section, None), key: section.clone(), message });
            continue;
        }
        let mut good_keys = toml::Table::new();
        for (key, value) in keys {
            let single = toml::Table::from_iter([(key.clone(), value.clone())]);
            match try_file(section, toml::Value::Table(single)) {
                Ok(()) => {
                    good_keys.insert(key.clone(), value.clone());
                }
                Err(message) => problems.push(Problem {
                    line: locate(section, Some(key)),
                    key: format!("{section}.{key}"),
                    message,
                }),
            }
        }
        good.insert(section.clone(), toml::Value::Table(good_keys));
    }
    // Ranges and combinations, as serve checks them, one at a time.
    for _ in 0..16 {
        let Ok(file) = toml::Value::Table(good.clone()).try_into::<FileConfig>() else { break };
        let Err(ConfigError::Invalid { key, reason }) = ServeConfig::merge(file, &Overrides::default()) else { break };
        let (section, name) = place(key);
        let key = name.map_or_else(|| section.to_string(), |n| format!("{section}.{n}"));
        if problems.iter().any(|p| p.key == key) {
            break;
        }
        problems.push(Problem {
            line: name.and_then(|n| locate(section, Some(n))).or_else(|| locate(section, None)),
            key,
            message: reason,
        });
        let removed = match (good.get_mut(section), name) {
            (Some(toml::Value::Table(keys)), Some(name)) => keys.remove(name).is_some(),
            (Some(_), None) => good.remove(section).is_some(),
            _ => false,
        };
        if !removed {
            break;
        }
    }
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    problems
}

/// Deserializes a file holding only `section = value`.
fn try_file(section: &str, value: toml::Value) -> Result<(), String> {
    let file = toml::Table::from_iter([(section.to_string(), value)]);
    toml::Value::Table(file).try_into::<FileConfig>().map(drop).map_err(|e| one_line(&e.to_string()))
}

/// Where a key named in a [`ConfigError::Invalid`] lives: section and key
/// (None: the whole section).
fn place(key: &str) -> (&str, Option<&str>) {
    match key.split_once('.') {
        Some((section, name)) => (section, Some(name)),
        None => (key, None),
    }
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn line_of(text: &str, span: &Range<usize>) -> usize {
    text.get(..span.start).map_or(1, |before| before.matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../../config/ntpd-sim.toml");

    #[test]
    fn the_annotated_example_has_no_problem() {
        assert_eq!(validate(EXAMPLE), []);
    }

    #[test]
    fn every_problem_is_reported_with_key_and_line() {
        let text = "[server]\nstratun = 2\nstratum = 16\nrefid = \"TOOLONG\"\n\n[sync]\nmin-poll = \"x\"\nholdover = -1\n\n[acces]\nallow = []\n";
        let problems = validate(text);
        let found: Vec<(Option<usize>, &str)> = problems.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert_eq!(
            found,
            [
                (Some(2), "server.stratun"),
                (Some(3), "server.stratum"),
                (Some(4), "server.refid"),
                (Some(7), "sync.min-poll"),
                (Some(8), "sync.holdover"),
                (Some(10), "acces"),
            ],
            "{problems:#?}"
        );
        assert!(problems[0].message.contains("unknown field `stratun`"), "{}", problems[0]);
    }

    #[test]
    fn refclock_tables_are_checked_as_serve_checks_them() {
        assert_eq!(validate("[[refclock]]\ndriver = \"shm\"\nunit = 0\n"), []);
        let problems = validate("[[refclock]]\ndriver = \"sock\"\nunit = 0\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "refclock");
        assert!(problems[0].message.contains("path"), "{}", problems[0]);
    }

    #[test]
    fn a_syntax_error_is_placed() {
        let problems = validate("[server]\nstratum = = 2\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, Some(2));
    }

    #[test]
    fn a_leap_smear_is_bounded_and_a_long_one_needs_a_file_with_upstreams() {
        let keys = |text: &str| validate(text).into_iter().map(|p| (p.line, p.key)).collect::<Vec<_>>();
        assert_eq!(keys("[server]\nleap-smear = 1\n"), [(Some(2), "server.leap-smear".to_string())]);
        assert_eq!(validate("[server]\nleap-smear = 86400\n[sync]\nupstreams = [\"192.0.2.1\"]\n"), []);
        let long = "[server]\nleap-smear = 100000\n[sync]\nupstreams = [\"192.0.2.1\"]\n";
        assert_eq!(keys(long), [(Some(2), "server.leap-smear".to_string())]);
        assert_eq!(validate(&format!("[server]\nleap-file = \"/x\"\n{}", &long[9..])), []);
    }
}
