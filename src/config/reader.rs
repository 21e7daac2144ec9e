//! A walker over a spanned TOML document that records every problem it meets
//! instead of stopping at the first, so that one `sidecast check` run shows
//! every mistake of a file, each as `FILE:LINE:COL: KEY: what was expected`.

use std::ops::Range;
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Why one value is wrong, as its error line says it (`expected a
/// duration such as "15s", found 3`). The parsers of single values return
/// it; [`Table`] places it at the value's line and column under its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Expected(String);

impl From<String> for Expected {
    fn from(message: String) -> Expected {
        Expected(message)
    }
}

impl From<&str> for Expected {
    fn from(message: &str) -> Expected {
        Expected(message.to_owned())
    }
}

impl AsRef<str> for Expected {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Collects the problems of one file, with what is needed to turn a byte
/// offset into a line and column.
pub(crate) struct Diag<'s> {
    file: String,
    src: &'s str,
    /// Each problem with the byte offset it points at, so that they can be
    /// reported in file order whatever order the sections are read in.
    errors: Vec<(usize, String)>,
}

impl<'s> Diag<'s> {
    pub(crate) fn new(file: &str, src: &'s str) -> Self {
        Diag {
            file: file.to_owned(),
            src,
            errors: Vec::new(),
        }
    }

    /// `LINE:COL` (both 1-based) of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.src.len());
        let before = &self.src[..offset];
        let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
        let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
        (line, col)
    }

    pub(crate) fn error(&mut self, span: &Range<usize>, key: &str, message: impl AsRef<str>) {
        let (line, col) = self.position(span.start);
        let message = message.as_ref();
        self.errors.push((
            span.start,
            if key.is_empty() {
                format!("{}:{line}:{col}: {message}", self.file)
            } else {
                format!("{}:{line}:{col}: {key}: {message}", self.file)
            },
        ));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The problems, one line each, in the order of the file.
    pub(crate) fn into_lines(mut self) -> Vec<String> {
        self.errors.sort_by_key(|(at, _)| *at);
        self.errors.into_iter().map(|(_, l)| l).collect()
    }
}

/// One TOML table being read: remembers which keys were asked for, so that
/// the rest can be reported as unknown (a typo must not be ignored).
pub(crate) struct Table<'t, 'i> {
    table: Option<&'t DeTable<'i>>,
    path: String,
    span: Range<usize>,
    used: Vec<&'static str>,
}

impl<'t, 'i> Table<'t, 'i> {
    pub(crate) fn new(table: Option<&'t DeTable<'i>>, path: String, span: Range<usize>) -> Self {
        Table {
            table,
            path,
            span,
            used: Vec::new(),
        }
    }

    /// The dotted name of a key of this table, as errors show it.
    pub(crate) fn key_path(&self, key: &str) -> String {
        if key.is_empty() {
            // The table itself (`routes[0]`), not `routes[0].`.
            self.path.clone()
        } else if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(crate) fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.table
            .is_some_and(|t| t.iter().any(|(k, _)| k.get_ref().as_ref() == key))
    }

    pub(crate) fn raw(&mut self, key: &'static str) -> Option<&'t Spanned<DeValue<'i>>> {
        self.used.push(key);
        let table = self.table?;
        table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| v)
    }

    /// Reads `key` with `parse`; a wrong value is recorded and gives `None`.
    pub(crate) fn get<T>(
        &mut self,
        d: &mut Diag,
        key: &'static str,
        parse: impl FnOnce(&DeValue) -> Result<T, Expected>,
    ) -> Option<T> {
        let value = self.raw(key)?;
        match parse(value.get_ref()) {
            Ok(v) => Some(v),
            Err(expected) => {
                d.error(&value.span(), &self.key_path(key), expected);
                None
            }
        }
    }

    /// Like [`Table::get`], with the span of the value for later checks.
    pub(crate) fn get_spanned<T>(
        &mut self,
        d: &mut Diag,
        key: &'static str,
        parse: impl FnOnce(&DeValue) -> Result<T, Expected>,
    ) -> Option<(T, Range<usize>)> {
        let value = self.raw(key)?;
        let span = value.span();
        match parse(value.get_ref()) {
            Ok(v) => Some((v, span)),
            Err(expected) => {
                d.error(&span, &self.key_path(key), expected);
                None
            }
        }
    }

    /// A list of strings whose elements are checked one by one: every bad
    /// element is reported at its own line and column, and the list is
    /// `None` when any was bad.
    pub(crate) fn get_list<T>(
        &mut self,
        d: &mut Diag,
        key: &'static str,
        mut each: impl FnMut(&str) -> Result<T, Expected>,
    ) -> Option<Vec<T>> {
        let value = self.raw(key)?;
        let path = self.key_path(key);
        let DeValue::Array(items) = value.get_ref() else {
            d.error(
                &value.span(),
                &path,
                format!(
                    "expected an array of strings, found {}",
                    type_str(value.get_ref())
                ),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items.iter() {
            let checked = match item.get_ref() {
                DeValue::String(s) => each(s),
                other => Err(format!(
                    "expected an array of strings, found an element that is {}",
                    type_str(other)
                )
                .into()),
            };
            match checked {
                Ok(v) => out.push(v),
                Err(expected) => {
                    ok = false;
                    d.error(&item.span(), &path, expected);
                }
            }
        }
        ok.then_some(out)
    }

    /// A sub-table; a value of another type is reported and read as absent.
    pub(crate) fn table(&mut self, d: &mut Diag, key: &'static str) -> Table<'t, 'i> {
        let path = self.key_path(key);
        match self.raw(key) {
            Some(v) => match v.get_ref() {
                DeValue::Table(t) => Table::new(Some(t), path, v.span()),
                other => {
                    d.error(
                        &v.span(),
                        &path,
                        format!("expected a table, found {}", other.type_str()),
                    );
                    Table::new(None, path, v.span())
                }
            },
            None => Table::new(None, path, 0..0),
        }
    }

    /// An array of tables (`[[routes]]`).
    pub(crate) fn array_of_tables(
        &mut self,
        d: &mut Diag,
        key: &'static str,
    ) -> Vec<Table<'t, 'i>> {
        let path = self.key_path(key);
        let Some(v) = self.raw(key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = v.get_ref() else {
            d.error(&v.span(), &path, "expected an array of tables ([[...]])");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::Table(t) => {
                    out.push(Table::new(Some(t), format!("{path}[{i}]"), item.span()))
                }
                other => d.error(
                    &item.span(),
                    &format!("{path}[{i}]"),
                    format!("expected a table, found {}", other.type_str()),
                ),
            }
        }
        out
    }

    /// Reports every key that was never asked for.
    pub(crate) fn finish(&self, d: &mut Diag) {
        let Some(table) = self.table else { return };
        for (k, _) in table.iter() {
            let name = k.get_ref().as_ref();
            if !self.used.contains(&name) {
                let what = if self.path.is_empty() {
                    "unknown section or key"
                } else {
                    "unknown key"
                };
                let mut known: Vec<&str> = self.used.clone();
                known.sort_unstable();
                known.dedup();
                let hint = closest(name, &known)
                    .map(|k| format!(", did you mean `{k}`?"))
                    .unwrap_or_default();
                d.error(
                    &k.span(),
                    &self.key_path(name),
                    format!("{what}{hint} (known here: {})", known.join(", ")),
                );
            }
        }
    }
}

/// The known key a typo most likely meant: the nearest by edit distance
/// (a swap of two neighbours counts as one edit), and only when it is near
/// enough to be that key misspelt (at most one edit in three letters, so
/// none for a name of one or two), so that a key from another section or
/// another program gets no guess. On a tie, the first in `known`'s order.
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    let allowed = name.chars().count() / 3;
    known
        .iter()
        .map(|k| (strsim::osa_distance(name, k), *k))
        .filter(|(d, _)| *d <= allowed)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

pub(crate) fn type_str(v: &DeValue) -> &'static str {
    v.type_str()
}

/// The text of a string value, or `expected WHAT, found TYPE`.
fn text<'v>(v: &'v DeValue, what: &str) -> Result<&'v str, Expected> {
    match v {
        DeValue::String(s) => Ok(s),
        other => Err(format!("expected {what}, found {}", type_str(other)).into()),
    }
}

pub(crate) fn string(v: &DeValue) -> Result<String, Expected> {
    text(v, "a string").map(str::to_owned)
}

/// One of `choices`, by name (`expected "text" or "json", found "xml"`).
pub(crate) fn one_of<T: Copy>(v: &DeValue, choices: &[(&str, T)]) -> Result<T, Expected> {
    let name = text(v, "a string")?;
    match choices.iter().find(|(n, _)| *n == name) {
        Some((_, choice)) => Ok(*choice),
        None => {
            let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
            Err(format!("expected {}, found {name:?}", names.join(" or ")).into())
        }
    }
}

pub(crate) fn boolean(v: &DeValue) -> Result<bool, Expected> {
    v.as_bool()
        .ok_or_else(|| format!("expected true or false, found {}", type_str(v)).into())
}

pub(crate) fn integer(v: &DeValue) -> Result<u64, Expected> {
    match v {
        DeValue::Integer(i) => u64::from_str_radix(i.as_str(), i.radix())
            .map_err(|_| format!("expected a non-negative integer, found {}", i.as_str()).into()),
        other => Err(format!("expected an integer, found {}", type_str(other)).into()),
    }
}

pub(crate) fn strings(v: &DeValue) -> Result<Vec<String>, Expected> {
    match v {
        DeValue::Array(items) => items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::String(s) => Ok(s.to_string()),
                other => Err(format!(
                    "expected an array of strings, found an element that is {}",
                    type_str(other)
                )
                .into()),
            })
            .collect(),
        other => Err(format!("expected an array of strings, found {}", type_str(other)).into()),
    }
}

/// A string or an array of strings (`audience`).
pub(crate) fn one_or_many(v: &DeValue) -> Result<Vec<String>, Expected> {
    match v {
        DeValue::String(s) => Ok(vec![s.to_string()]),
        DeValue::Array(_) => strings(v),
        other => Err(format!(
            "expected a string or an array of strings, found {}",
            type_str(other)
        )
        .into()),
    }
}

/// The name of an environment variable that holds a secret. The value is
/// never echoed: a secret pasted here by mistake must not reach a log.
pub(crate) fn env_name(v: &DeValue) -> Result<String, Expected> {
    let s = text(v, "the name of an environment variable")?;
    let mut chars = s.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 128;
    if ok {
        Ok(s.to_string())
    } else {
        Err("expected the name of an environment variable (letters, digits and _, such as \"SIDECAST_JWT_SECRET\"), not its value; what was given is not shown, as it may be a secret".into())
    }
}

/// `"15s"`, `"500ms"`, `"1h 30m"`.
pub(crate) fn duration(v: &DeValue) -> Result<Duration, Expected> {
    parse_duration(text(v, "a duration string such as \"15s\" or \"500ms\"")?)
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, Expected> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("expected a duration such as \"15s\" or \"500ms\", found {s:?} ({e})").into()
    })
}

/// Bytes: an integer, or a string such as `"64MiB"`.
pub(crate) fn size(v: &DeValue) -> Result<u64, Expected> {
    match v {
        DeValue::Integer(_) => integer(v),
        DeValue::String(s) => s
            .trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|_| {
                format!("expected a size in bytes or a string such as \"64MiB\", found {s:?}")
                    .into()
            }),
        other => Err(format!(
            "expected a size (integer bytes or a string such as \"64MiB\"), found {}",
            type_str(other)
        )
        .into()),
    }
}

/// A key's value parsed, or its default when it is absent or bad (the
/// problem is recorded in `Diag` either way).
macro_rules! take {
    ($t:expr, $d:expr, $key:literal, $parse:expr, $default:expr) => {
        $t.get($d, $key, $parse).unwrap_or_else(|| $default)
    };
}
pub(super) use take;

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `src` the way the sections read theirs: a table `[a]` with an
    /// integer `count` and a duration `wait`, then tables `[[r]]` with a
    /// list of non-empty `names`; every problem line, in the order of the
    /// file.
    fn problems(src: &str) -> Vec<String> {
        let mut d = Diag::new("f.toml", src);
        let doc = DeTable::parse(src).expect("valid TOML");
        let mut root = Table::new(Some(doc.get_ref()), String::new(), doc.span());
        let mut a = root.table(&mut d, "a");
        let _ = a.get(&mut d, "count", integer);
        let _ = a.get(&mut d, "wait", duration);
        a.finish(&mut d);
        for mut r in root.array_of_tables(&mut d, "r") {
            let _ = r.get_list(&mut d, "names", |s| match s {
                "" => Err("expected a name".into()),
                s => Ok(s.to_owned()),
            });
            r.finish(&mut d);
        }
        root.finish(&mut d);
        d.into_lines()
    }

    #[test]
    fn every_problem_of_a_file_is_reported_at_its_key_path_in_file_order() {
        // `[[r]]` stands before `[a]`, which is read first: the lines still
        // come in the order of the file.
        let src = "[[r]]\nnames = [\"ok\", \"\"]\n\n[[r]]\nnames = \"x\"\nextra = true\n\n[a]\ncount = \"x\"\nwait = 5\ncuont = 1\n\n[b]\n";
        assert_eq!(
            problems(src),
            [
                "f.toml:2:16: r[0].names: expected a name",
                "f.toml:5:9: r[1].names: expected an array of strings, found string",
                "f.toml:6:1: r[1].extra: unknown key (known here: names)",
                "f.toml:9:9: a.count: expected an integer, found string",
                "f.toml:10:8: a.wait: expected a duration string such as \"15s\" or \"500ms\", found integer",
                "f.toml:11:1: a.cuont: unknown key, did you mean `count`? (known here: count, wait)",
                "f.toml:13:2: b: unknown section or key (known here: a, r)",
            ]
        );
    }

    #[test]
    fn a_good_file_has_no_problems() {
        assert!(problems("[a]\ncount = 3\nwait = \"1s\"\n[[r]]\nnames = [\"x\"]\n").is_empty());
        assert!(problems("").is_empty());
    }

    #[test]
    fn a_value_that_should_be_a_table_is_one_problem() {
        assert_eq!(
            problems("a = 1\nr = \"x\"\n"),
            [
                "f.toml:1:5: a: expected a table, found integer",
                "f.toml:2:5: r: expected an array of tables ([[...]])",
            ]
        );
    }

    #[test]
    fn a_choice_names_every_choice_when_it_is_none_of_them() {
        fn value(src: &str) -> DeValue<'_> {
            DeTable::parse(src).unwrap().get_ref()["v"]
                .get_ref()
                .clone()
        }
        let choices = [("text", 1), ("json", 2)];
        assert_eq!(one_of(&value("v = \"json\""), &choices), Ok(2));
        assert_eq!(
            one_of(&value("v = \"xml\""), &choices),
            Err(Expected::from(
                "expected \"text\" or \"json\", found \"xml\""
            ))
        );
        assert_eq!(
            one_of(&value("v = 1"), &choices),
            Err(Expected::from("expected a string, found integer"))
        );
    }

    #[test]
    fn a_typo_is_answered_with_the_key_it_most_likely_meant() {
        let history = ["history", "history_ttl", "queue"];
        assert_eq!(closest("histroy", &history), Some("history"));
        assert_eq!(closest("History", &history), Some("history"));
        assert_eq!(closest("sizee", &["pattern", "size", "ttl"]), Some("size"));
        assert_eq!(
            closest("hed_timeout", &["head_timeout"]),
            Some("head_timeout")
        );
        // Too far from every key: no guess.
        assert_eq!(closest("colour", &["admin", "public", "publish"]), None);
        assert_eq!(closest("x", &["ttl", "size"]), None);
        assert_eq!(closest("secret", &["secret_env", "secret_file"]), None);
        // A tie goes to the first known key.
        assert_eq!(closest("abc", &["abd", "abe"]), Some("abd"));
    }
}
