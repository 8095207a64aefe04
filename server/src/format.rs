//! Numbers and durations as people read them, for the HTML pages and the CLI
//! alike.

/// A count with thin separators: 296 280.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Seconds as `1h 02m`, `3m 05s` or `12s`.
pub fn human_duration(seconds: i64) -> String {
    let (h, m, s) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(185), "3m 05s");
        assert_eq!(human_duration(3720), "1h 02m");
    }

    #[test]
    fn counts_group_by_thousands() {
        assert_eq!(thousands(12), "12");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(296_280), "296\u{202f}280");
        assert_eq!(thousands(-1_000), "-1\u{202f}000");
        assert_eq!(thousands(-1_234_567), "-1\u{202f}234\u{202f}567");
    }
}
