//! A small "user" pipeline: word counts per line, summed. Its tests (in `tests/`) run it on
//! every backend against Redwood's emulators, as a user's own integration tests would.

use std::collections::BTreeMap;

/// Counts the words of one line.
#[redwood::remote]
pub fn count_words(line: String) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for word in line.split_whitespace() {
        *counts.entry(word.to_lowercase()).or_insert(0) += 1;
    }
    counts
}

/// Doubles a number.
#[redwood::remote]
pub fn double(x: u64) -> u64 {
    x * 2
}

/// Adds the counts of many lines.
pub fn merge(parts: impl IntoIterator<Item = BTreeMap<String, u64>>) -> BTreeMap<String, u64> {
    let mut total = BTreeMap::new();
    for part in parts {
        for (word, n) in part {
            *total.entry(word).or_insert(0) += n;
        }
    }
    total
}

/// Counts the words of `lines` on the session's backend.
pub async fn word_counts(
    rw: &redwood::Session,
    lines: Vec<String>,
) -> redwood::Result<BTreeMap<String, u64>> {
    let parts = rw.map(count_words, lines).await?.collect().await?;
    Ok(merge(parts))
}
