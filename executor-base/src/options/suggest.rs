//! "Did you mean": the nearest known spelling of a mistyped key.

/// The candidate nearest to `input`, if one is near enough to be a typo: the same word
/// ignoring case and `_`/`-`/`.`, or within an edit distance of about a third of its
/// length (at least 2).
///
/// ```
/// use executor_base::options::did_you_mean;
/// let keys = ["pullPolicy", "prefix", "stopGraceMs"];
/// assert_eq!(did_you_mean("stopGracems", keys), Some("stopGraceMs"));
/// assert_eq!(did_you_mean("pull_policy", keys), Some("pullPolicy"));
/// assert_eq!(did_you_mean("colour", keys), None);
/// ```
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-' | '.'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let wanted = norm(input);
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        let d = if norm(c) == wanted {
            0
        } else {
            edit_distance(&input.to_lowercase(), &c.to_lowercase())
        };
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    let limit = (input.chars().count() / 3).max(2);
    best.filter(|(d, _)| *d <= limit).map(|(_, c)| c)
}

/// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions), in
/// characters: what [`did_you_mean`] ranks by, for callers with their own threshold.
///
/// ```
/// use executor_base::options::edit_distance;
/// assert_eq!(edit_distance("abc", "acb"), 1);
/// ```
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("abc", "acb"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
    }

    #[test]
    fn suggests_only_near_keys() {
        let keys = ["checkWorkers", "livenessIntervalMs", "server"];
        assert_eq!(did_you_mean("checkWorker", keys), Some("checkWorkers"));
        assert_eq!(
            did_you_mean("LIVENESS_INTERVAL_MS", keys),
            Some("livenessIntervalMs")
        );
        assert_eq!(did_you_mean("sevrer", keys), Some("server"));
        assert_eq!(did_you_mean("queue", keys), None);
    }
}
