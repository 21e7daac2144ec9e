//! A log-linear latency histogram in microseconds (32 buckets per power of
//! two, about 3% resolution). Buckets are written sparsely so that the
//! driver can merge the histograms of several processes exactly.

const SUB: u32 = 32;
const LINEAR: u64 = 64;

#[derive(Default, Clone)]
pub struct Hist {
    counts: Vec<u64>,
    pub n: u64,
    pub max: u64,
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= 6
    let sub = (v >> (e - 5)) & (SUB as u64 - 1);
    (LINEAR + (e as u64 - 6) * SUB as u64 + sub) as usize
}

fn lower_bound(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let e = (i - LINEAR) / SUB as u64 + 6;
    let sub = (i - LINEAR) % SUB as u64;
    (1u64 << e) + (sub << (e - 5))
}

impl Hist {
    pub fn record(&mut self, v: u64) {
        let i = index(v);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.n += 1;
        self.max = self.max.max(v);
    }

    /// The value at quantile `q` (0..=1), as its bucket's lower bound.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let want = ((self.n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return lower_bound(i).min(self.max);
            }
        }
        self.max
    }

    /// `[[lower_bound_us, count], ...]` for the non-empty buckets.
    pub fn sparse_json(&self) -> String {
        let mut s = String::from("[");
        for (i, c) in self.counts.iter().enumerate().filter(|(_, c)| **c > 0) {
            if s.len() > 1 {
                s.push(',');
            }
            s.push_str(&format!("[{},{}]", lower_bound(i), c));
        }
        s.push(']');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_within_three_percent() {
        for v in [
            0u64,
            1,
            63,
            64,
            65,
            100,
            1000,
            12345,
            1_000_000,
            987_654_321,
        ] {
            let lb = lower_bound(index(v));
            assert!(lb <= v, "{v}: {lb}");
            assert!((v - lb) as f64 <= v as f64 * 0.032, "{v}: {lb}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Hist::default();
        for v in 1..=1000u64 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 496);
        assert!(h.quantile(0.99) >= 960);
        assert_eq!(h.max, 1000);
    }
}
