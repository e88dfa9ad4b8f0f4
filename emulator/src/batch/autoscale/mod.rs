//! The Batch autoscale formula language, as Microsoft documents it ("Create a formula to
//! automatically scale compute nodes in a Batch pool"): statements separated by `;` with `//`
//! comments; doubles, doubleVecs, strings, timestamps and time intervals; arithmetic,
//! comparison, logical and `?:` operators; the functions `avg`, `ceil`, `floor`, `len`, `lg`,
//! `ln`, `log`, `max`, `min`, `norm`, `percentile`, `rand`, `range`, `round`, `std`, `stop`,
//! `sum`, `time` and `val`; `TimeInterval_*` constants; and the service-defined variables, whose
//! samples (`GetSample`, `GetSamplePercent`, `GetSamplePeriod`, `Count`, `HistoryBeginTime`) come
//! from the emulator's own metrics, sampled every 30 seconds as the service does. What is outside
//! the language is an error naming it.

mod eval;
mod lexer;
mod parser;
mod samples;
mod value;

use std::collections::BTreeMap;

pub use samples::{History, Sample};
use value::Value;

/// The longest formula the service takes.
const MAX_FORMULA_BYTES: usize = 8 * 1024;
/// The most statements in a formula.
const MAX_STATEMENTS: usize = 100;

/// What an evaluation decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `$TargetDedicatedNodes` (whole nodes, at least 0).
    pub dedicated: i64,
    /// `$TargetLowPriorityNodes`.
    pub low_priority: i64,
    /// `$NodeDeallocationOption`.
    pub deallocation: String,
    /// Every variable's final value, as an autoscale run's `results` shows them.
    pub results: String,
}

/// A metric's index in a [`Sample`].
pub fn metric(name: &str) -> Option<usize> {
    eval::METRICS.iter().position(|m| *m == name)
}

/// Checks a formula as the service does when autoscale is enabled: its syntax and size, and
/// that it evaluates (names, functions, types), on a full history where every metric is 1, so
/// that what depends on the pool's actual samples cannot refuse it.
pub fn validate(formula: &str) -> Result<(), String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let mut full = History::new();
    let ones: Sample = [1.0; eval::METRICS.len()];
    for i in (0..samples::KEPT).rev() {
        full.record(now - i as f64 * samples::PERIOD.as_secs_f64(), ones, 1.0);
    }
    evaluate(formula, &full, (0, 0)).map(|_| ())
}

/// Parses a formula, checking its size and statement count.
fn parse(formula: &str) -> Result<Vec<parser::Statement>, String> {
    if formula.len() > MAX_FORMULA_BYTES {
        return Err(format!(
            "the formula is longer than {MAX_FORMULA_BYTES} bytes"
        ));
    }
    let statements = parser::statements(lexer::tokens(formula)?)?;
    if statements.len() > MAX_STATEMENTS {
        return Err(format!(
            "the formula has more than {MAX_STATEMENTS} statements"
        ));
    }
    Ok(statements)
}

/// Evaluates a formula on a pool's history, whose targets are `(dedicated, low priority)` now.
pub fn evaluate(formula: &str, history: &History, targets: (i64, i64)) -> Result<Outcome, String> {
    let statements = parse(formula)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let mut vars = BTreeMap::new();
    vars.insert(
        "$TargetDedicatedNodes".to_string(),
        Value::Double(targets.0 as f64),
    );
    vars.insert(
        "$TargetLowPriorityNodes".to_string(),
        Value::Double(targets.1 as f64),
    );
    vars.insert(
        "$NodeDeallocationOption".to_string(),
        Value::Str("requeue".into()),
    );
    let mut run = eval::Evaluation { history, now, vars };
    run.run(&statements)?;
    let target = |name: &str| -> Result<i64, String> {
        let v = run.vars.get(name).cloned().unwrap_or(Value::Double(0.0));
        // Whole nodes: the fraction is dropped; never below zero.
        Ok(v.double(name)?.max(0.0).min(i64::MAX as f64) as i64)
    };
    let dedicated = target("$TargetDedicatedNodes")?;
    let low_priority = target("$TargetLowPriorityNodes")?;
    let deallocation = match run.vars.get("$NodeDeallocationOption") {
        Some(Value::Str(s)) => s.clone(),
        _ => "requeue".into(),
    };
    let first = [
        "$TargetDedicatedNodes",
        "$TargetLowPriorityNodes",
        "$NodeDeallocationOption",
    ];
    let mut shown: Vec<String> = first
        .iter()
        .filter_map(|k| run.vars.get(*k).map(|v| format!("{k}={}", v.show())))
        .collect();
    shown.extend(
        run.vars
            .iter()
            .filter(|(k, _)| !first.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={}", v.show())),
    );
    Ok(Outcome {
        dedicated,
        low_priority,
        deallocation,
        results: shown.join(";"),
    })
}

#[cfg(test)]
mod tests;
