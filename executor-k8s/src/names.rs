//! Kubernetes name and label syntax, checked before anything reaches the API server.

/// Whether `c` may start or end a name: a lowercase ASCII letter or a digit.
fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// A DNS-1123 label of at most `max` characters (63 for Kubernetes names): lowercase
/// alphanumerics or `-`, alphanumeric at both ends.
pub(crate) fn is_dns_label(v: &str, max: usize) -> bool {
    !v.is_empty()
        && v.len() <= max
        && v.chars().all(|c| lower_alnum(c) || c == '-')
        && v.starts_with(lower_alnum)
        && v.ends_with(lower_alnum)
}

/// A DNS-1123 subdomain: at most 253 lowercase alphanumerics, `-` or `.`, alphanumeric at
/// both ends.
pub(crate) fn is_dns_subdomain(v: &str) -> bool {
    v.len() <= 253
        && v.chars().all(|c| lower_alnum(c) || c == '-' || c == '.')
        && v.starts_with(lower_alnum)
        && v.ends_with(lower_alnum)
}

/// A label value: at most 63 alphanumerics, `-`, `_` or `.`, alphanumeric at both ends.
pub(crate) fn is_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax() {
        assert!(is_dns_label("sd-tools", 63));
        assert!(!is_dns_label("-x", 63) && !is_dns_label("x-", 63) && !is_dns_label("", 63));
        assert!(!is_dns_label("abc", 2) && !is_dns_label("Ab", 63));
        assert!(is_dns_subdomain("gvisor.example") && !is_dns_subdomain(".x"));
        assert!(is_label_value("ssd") && is_label_value("A_b.c") && !is_label_value("a b"));
    }
}
