//! Two jobs chained through storage: job 1 makes vectors, job 2 reads them by `ResultRef`
//! inside its tasks. The vectors never pass through this program.
//!
//! `cargo run --release --example chain`

use redwood::prelude::*;

/// Makes a vector of `n` values from a seed.
#[redwood::remote]
fn make_vector(seed: u64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| ((seed as f64) + i as f64 * 0.001).sin())
        .collect()
}

/// The Euclidean norm of an earlier task's vector.
#[redwood::remote]
fn norm(v: ResultRef<Vec<f64>>) -> Result<f64, redwood::Error> {
    Ok(v.get()?.iter().map(|x| x * x).sum::<f64>().sqrt())
}

#[redwood::main]
async fn main() -> redwood::Result<()> {
    const N: usize = 1_000_000;
    let rw = Session::from_config()?;
    let first = rw.map(make_vector, (0..8u64).map(|s| (s, N))).await?;
    let refs = first.refs().await?;
    println!(
        "job 1 ({}) stored {} vectors of {N} values",
        first.id(),
        refs.len()
    );

    let second = rw.map(norm, refs).await?;
    let norms = second.collect().await?;
    for (seed, got) in norms.iter().enumerate() {
        let want = make_vector(seed as u64, N)
            .iter()
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt();
        assert!((got - want).abs() < 1e-9, "norm {seed}: {got} vs {want}");
        println!("norm of vector {seed}: {got:.3}");
    }
    println!("job 2 read every vector from storage; all norms match a local computation");
    Ok(())
}
