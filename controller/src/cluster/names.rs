//! Names and label values derived from user input (`--lease-name`, pod names, object names)
//! kept within the API server's limits: a label value is at most 63 characters, an object name
//! a DNS-1123 subdomain of at most 253. The real API server refuses anything longer (422 on a
//! write, 400 on a label selector), so an over-long input is shortened with a hash suffix:
//! distinct inputs stay distinct and every replica derives the same result.

/// Longest label value.
pub const LABEL_VALUE_MAX: usize = 63;
/// Longest DNS-1123 subdomain (most object names, Leases and Events among them).
pub const SUBDOMAIN_MAX: usize = 253;
/// `-` and 10 hex digits of the input's hash.
const SUFFIX_LEN: usize = 11;

/// FNV-1a, 64 bits: stable across releases and platforms (unlike `DefaultHasher`).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn suffix(text: &str) -> String {
    format!("-{:010x}", fnv1a(text) & 0xff_ffff_ffff)
}

/// Whether `value` is a valid label value: empty, or at most 63 of `[A-Za-z0-9_.-]` starting
/// and ending alphanumeric.
pub fn is_label_value(value: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    value.is_empty()
        || (value.len() <= LABEL_VALUE_MAX
            && alnum(value.chars().next())
            && alnum(value.chars().last())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
}

/// Whether `name` is a DNS-1123 subdomain: at most 253 of `[a-z0-9.-]`, each dot-separated
/// part starting and ending alphanumeric.
pub fn is_subdomain(name: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !name.is_empty()
        && name.len() <= SUBDOMAIN_MAX
        && name.split('.').all(|part| {
            alnum(part.chars().next())
                && alnum(part.chars().last())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// `text` as a label value: unchanged when valid, otherwise its allowed characters cut to fit
/// with a hash of the whole of `text` appended.
pub fn label_value(text: &str) -> String {
    if is_label_value(text) {
        return text.to_string();
    }
    let kept: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(LABEL_VALUE_MAX - SUFFIX_LEN)
        .collect();
    let kept = kept.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    // The suffix ends in a hex digit; without a prefix it must not start with `-`.
    let value = format!("{kept}{}", suffix(text));
    value.trim_start_matches('-').to_string()
}

/// `text` as an object name (DNS-1123 subdomain): unchanged when valid, otherwise lower-cased,
/// other characters replaced by `-`, cut to fit, with a hash of the whole of `text` appended.
pub fn subdomain(text: &str) -> String {
    if is_subdomain(text) {
        return text.to_string();
    }
    let lowered: String = text
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    // Parts that are empty or end in `-` are mended by collapsing them with their neighbours.
    let parts: Vec<&str> = lowered
        .split('.')
        .map(|p| p.trim_matches('-'))
        .filter(|p| !p.is_empty())
        .collect();
    let mut kept = parts.join(".");
    kept.truncate(SUBDOMAIN_MAX - SUFFIX_LEN);
    let kept = kept.trim_end_matches(['-', '.']);
    let name = format!("{kept}{}", suffix(text));
    name.trim_start_matches('-').to_string()
}

/// The name of an Event about object `object` (a DNS subdomain) at `nanos`: `<object>.<nanos
/// in hex>` as kube-rs and client-go name them, with `<object>` hash-shortened when the whole
/// would pass 253 characters (a long object name made the API server refuse the Event).
pub fn event_name(object: &str, nanos: u128) -> String {
    let time = format!(".{nanos:x}");
    let room = SUBDOMAIN_MAX - time.len();
    let name = if object.is_empty() {
        "object".to_string()
    } else {
        subdomain(object)
    };
    if name.len() <= room {
        return format!("{name}{time}");
    }
    let mut kept = name;
    kept.truncate(room - SUFFIX_LEN);
    let kept = kept.trim_end_matches(['-', '.']);
    format!("{kept}{}{time}", suffix(object))
}

/// `text` cut to `max` bytes with a hash suffix when longer (free-form fields with a length
/// limit, such as an Event's `reportingInstance`, 128).
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(SUFFIX_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{}", &text[..end], suffix(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_inputs_are_kept() {
        assert_eq!(
            label_value("portcullis-controller"),
            "portcullis-controller"
        );
        assert_eq!(label_value(&"a".repeat(63)), "a".repeat(63));
        assert_eq!(subdomain("demo.echo-1"), "demo.echo-1");
        assert_eq!(subdomain(&"a".repeat(253)), "a".repeat(253));
    }

    #[test]
    fn long_label_values_are_cut_with_a_hash() {
        // The chart's full name for release `my-team-websocket-gateway-production-eu-west-1-blue`.
        let lease = "my-team-websocket-gateway-production-eu-west-1-blue-portcullis-controller";
        assert_eq!(lease.len(), 73);
        let value = label_value(lease);
        assert!(is_label_value(&value), "{value}");
        assert!(value.len() <= 63);
        assert!(value.starts_with("my-team-websocket-gateway-production-eu-west-1-blue-"));
        // Same input, same value (every replica derives it); a different tail, a different one.
        assert_eq!(label_value(lease), value);
        let other = label_value(&lease.replace("blue", "gren"));
        assert_ne!(other, value);
        assert!(other.len() <= 63);
        for hostile in ["-", "_x_", "ä", "a b", &"-".repeat(100), &"é".repeat(40)] {
            let v = label_value(hostile);
            assert!(is_label_value(&v) && !v.is_empty(), "{hostile:?} -> {v:?}");
        }
    }

    #[test]
    fn long_or_invalid_names_become_subdomains_with_a_hash() {
        let long = format!("{}.x", "a".repeat(300));
        let name = subdomain(&long);
        assert!(is_subdomain(&name), "{name}");
        assert_eq!(name.len(), 253);
        assert_ne!(subdomain(&format!("{}.y", "a".repeat(300))), name);
        for hostile in [
            "Host_Name!",
            "a..b",
            ".a.",
            "-",
            "",
            "ä",
            &"-.".repeat(200),
            &format!("{}-.b", "a".repeat(242)),
        ] {
            let n = subdomain(hostile);
            assert!(is_subdomain(&n), "{hostile:?} -> {n:?}");
        }
        assert!(subdomain("Host_Name!").starts_with("host-name-"));
    }

    #[test]
    fn event_names_fit_whatever_the_object_name() {
        assert_eq!(event_name("echo", 0xabc), "echo.abc");
        let nanos = 1_764_400_000_123_456_789u128;
        for object in [
            "a".repeat(253),
            format!("{}.b", "a".repeat(250)),
            format!("{}-{}", "a".repeat(200), "b".repeat(52)),
            String::new(),
        ] {
            let name = event_name(&object, nanos);
            assert!(is_subdomain(&name), "{object:?} -> {name:?}");
            assert!(name.ends_with(&format!(".{nanos:x}")), "{name}");
        }
        // Two long names that share their first 230 characters still name different Events.
        let a = event_name(&format!("{}-a", "x".repeat(250)), nanos);
        let b = event_name(&format!("{}-b", "x".repeat(250)), nanos);
        assert_ne!(a, b);
        assert_eq!(event_name(&"a".repeat(253), nanos).len(), 253);
    }

    #[test]
    fn cut_keeps_short_text_and_hashes_long_text() {
        assert_eq!(cut("controller-a", 128), "controller-a");
        let long = "é".repeat(100);
        let c = cut(&long, 128);
        assert!(c.len() <= 128, "{}", c.len());
        assert_ne!(c, cut(&"é".repeat(101), 128));
    }

    #[test]
    fn validators_match_the_api_server() {
        assert!(!is_label_value(&"a".repeat(64)));
        assert!(!is_label_value("-a"));
        assert!(!is_label_value("a/b"));
        assert!(is_label_value("A_b.c-1"));
        assert!(!is_subdomain(&"a".repeat(254)));
        assert!(!is_subdomain("A"));
        assert!(!is_subdomain("a..b"));
        assert!(!is_subdomain("a-.b"));
        assert!(is_subdomain("a-1.b"));
    }
}
