//! MapReduce over stored text: writes 16 documents to the store, counts words in each with a
//! remote task that reads its document from storage, and merges the counts.
//!
//! `cargo run --release --example wordcount`

use std::collections::HashMap;

use redwood::prelude::*;

const WORDS: &[&str] = &[
    "redwood",
    "cloud",
    "task",
    "blob",
    "batch",
    "worker",
    "future",
    "result",
    "region",
    "pool",
    "queue",
    "node",
    "rust",
    "storage",
    "broadcast",
    "reduce",
];

/// Counts the words of one stored document.
#[redwood::remote]
fn count_words(doc: Blob) -> Result<HashMap<String, u64>, redwood::Error> {
    let bytes = doc.get()?;
    let text = String::from_utf8_lossy(&bytes);
    let mut counts = HashMap::new();
    for word in text.split_whitespace() {
        *counts.entry(word.to_lowercase()).or_insert(0) += 1;
    }
    Ok(counts)
}

/// A deterministic document of `n` words.
fn document(seed: u64, n: usize) -> String {
    let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut words = Vec::with_capacity(n);
    for _ in 0..n {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Skewed choice so the counts differ.
        let r = (state % 1000) as usize;
        words.push(WORDS[(r * r / 1000) * WORDS.len() / 1000]);
    }
    words.join(" ")
}

#[redwood::main]
async fn main() -> redwood::Result<()> {
    let rw = Session::from_config()?;
    let docs: Vec<String> = (0..16).map(|i| document(i, 50_000)).collect();
    for (i, doc) in docs.iter().enumerate() {
        rw.upload(
            &format!("wordcount/doc-{i:02}.txt"),
            doc.clone().into_bytes(),
        )
        .await?;
    }
    let blobs = rw.blobs("wordcount/").await?;
    println!(
        "{} documents stored under {}",
        blobs.len(),
        rw.storage().url()
    );

    let job = rw.map(count_words, blobs).await?;
    let totals = job
        .reduce(HashMap::<String, u64>::new(), |mut acc, counts| {
            for (word, n) in counts {
                *acc.entry(word).or_insert(0) += n;
            }
            acc
        })
        .await?;

    // Check against a local count of the same text.
    let mut local = HashMap::<String, u64>::new();
    for doc in &docs {
        for w in doc.split_whitespace() {
            *local.entry(w.to_string()).or_insert(0) += 1;
        }
    }
    assert_eq!(totals, local, "remote and local counts differ");

    let mut top: Vec<_> = totals.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (word, n) in top.iter().take(5) {
        println!("{word:>10} {n}");
    }
    let total: u64 = totals.values().sum();
    println!(
        "{total} words in {} documents, matches the local count",
        docs.len()
    );
    Ok(())
}
