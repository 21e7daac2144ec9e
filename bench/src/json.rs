//! A tiny JSON object writer for the reports (no serde: the generator keeps
//! its dependencies to tokio and libc).

pub struct Obj(String);

impl Obj {
    pub fn new() -> Obj {
        Obj(String::from("{"))
    }

    fn key(&mut self, k: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push_str(&quote(k));
        self.0.push(':');
    }

    pub fn num(mut self, k: &str, v: impl std::fmt::Display) -> Obj {
        self.key(k);
        self.0.push_str(&v.to_string());
        self
    }

    pub fn float(mut self, k: &str, v: f64) -> Obj {
        self.key(k);
        if v.is_finite() {
            self.0.push_str(&format!("{v:.6}"));
        } else {
            self.0.push_str("null");
        }
        self
    }

    pub fn str(mut self, k: &str, v: &str) -> Obj {
        self.key(k);
        self.0.push_str(&quote(v));
        self
    }

    /// `v` must already be JSON.
    pub fn raw(mut self, k: &str, v: &str) -> Obj {
        self.key(k);
        self.0.push_str(v);
        self
    }

    pub fn done(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `{"a": 1, ...}` from counted names.
pub fn counts<'a>(it: impl Iterator<Item = (&'a String, &'a u64)>) -> String {
    let mut o = Obj::new();
    for (k, v) in it {
        o = o.num(k, v);
    }
    o.done()
}
