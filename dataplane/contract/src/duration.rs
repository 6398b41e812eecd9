//! Go duration strings (`"5s"`, `"1m30s"`, `"500ms"`), as APISIX manifests and our flags use.

use std::time::Duration;

/// Parses a non-negative Go duration: one or more `<number><unit>` with units `ns us µs ms s m h`;
/// a bare `0` is allowed. Fractions (`1.5s`) are accepted.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.starts_with('-') {
        return Err(format!("{text:?}: negative durations are not allowed"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!(
                "{text:?}: expected a number, e.g. \"5s\", \"1m30s\", \"500ms\""
            ));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("{text:?}: {:?} is not a number", &rest[..num_len]))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("{text:?}: missing unit (ns, us, ms, s, m, h)")),
            other => {
                return Err(format!(
                    "{text:?}: unknown unit {other:?} (ns, us, ms, s, m, h)"
                ));
            }
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    Duration::try_from_secs_f64(total).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ok = [
            ("5s", 5000),
            ("1m30s", 90_000),
            ("500ms", 500),
            ("1.5s", 1500),
            ("2h", 7_200_000),
            ("0", 0),
            ("0s", 0),
            ("1m0.5s", 60_500),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_go_duration(text).unwrap(),
                Duration::from_millis(ms),
                "{text}"
            );
        }
        for (text, err) in [
            ("-1s", "negative"),
            ("5", "missing unit"),
            ("5d", "unknown unit \"d\""),
            ("", "empty"),
            ("s", "expected a number"),
            ("1..2s", "not a number"),
        ] {
            let e = parse_go_duration(text).unwrap_err();
            assert!(e.contains(err), "{text}: {e}");
        }
    }
}
