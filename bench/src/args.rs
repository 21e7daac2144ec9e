//! `--key value` flags, each named once; anything unknown is an error.

use std::collections::HashMap;
use std::str::FromStr;

pub struct Args {
    map: HashMap<String, String>,
}

impl Args {
    pub fn parse(raw: &[String], known: &[&str]) -> Result<Args, String> {
        let mut map = HashMap::new();
        let mut it = raw.iter();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .ok_or_else(|| format!("expected a --flag, got {k:?}"))?;
            if !known.contains(&key) {
                return Err(format!(
                    "unknown flag --{key} (known: {})",
                    known.join(", ")
                ));
            }
            let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            if map.insert(key.to_string(), v.clone()).is_some() {
                return Err(format!("--{key} given twice"));
            }
        }
        Ok(Args { map })
    }

    pub fn str(&self, key: &str, default: Option<&str>) -> Result<String, String> {
        match (self.map.get(key), default) {
            (Some(v), _) => Ok(v.clone()),
            (None, Some(d)) => Ok(d.to_string()),
            (None, None) => Err(format!("--{key} is required")),
        }
    }

    pub fn num<T: FromStr>(&self, key: &str, default: Option<T>) -> Result<T, String> {
        match (self.map.get(key), default) {
            (Some(v), _) => v
                .parse()
                .map_err(|_| format!("--{key}: expected a number, got {v:?}")),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(format!("--{key} is required")),
        }
    }
}
