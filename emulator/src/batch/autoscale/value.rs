//! The formula language's values (double, doubleVec, string, timestamp, timeinterval, and the
//! service's metric objects) and the operators between them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Double(f64),
    Vec(Vec<f64>),
    Str(String),
    /// Seconds since the Unix epoch.
    Time(f64),
    /// Seconds.
    Interval(f64),
    /// A read-only service-defined variable (`$PendingTasks`): its methods read its samples.
    Metric(&'static str),
    /// `stop()` was called.
    Stop,
}

impl Value {
    /// The type's name in error messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::Double(_) => "double",
            Value::Vec(_) => "doubleVec",
            Value::Str(_) => "string",
            Value::Time(_) => "timestamp",
            Value::Interval(_) => "timeinterval",
            Value::Metric(_) => "metric",
            Value::Stop => "stop()",
        }
    }

    /// The value as a double (a metric reads its latest sample in `latest`).
    pub(super) fn double(&self, what: &str) -> Result<f64, String> {
        match self {
            Value::Double(d) => Ok(*d),
            other => Err(format!("{what} needs a double, not a {}", other.kind())),
        }
    }

    /// Whether a condition holds (nonzero).
    pub(super) fn truth(&self) -> Result<bool, String> {
        Ok(self.double("a condition")? != 0.0)
    }

    /// How it is shown in an autoscale run's `results`.
    pub(super) fn show(&self) -> String {
        match self {
            Value::Double(d) => number(*d),
            Value::Vec(v) => format!(
                "[{}]",
                v.iter().map(|d| number(*d)).collect::<Vec<_>>().join(",")
            ),
            Value::Str(s) => s.clone(),
            Value::Time(t) => humantime::format_rfc3339_millis(system_time(*t)).to_string(),
            Value::Interval(s) => format!("{}s", number(*s)),
            Value::Metric(name) => (*name).to_string(),
            Value::Stop => "stop".into(),
        }
    }
}

fn number(d: f64) -> String {
    if d.fract() == 0.0 && d.abs() < 1e15 {
        format!("{}", d as i64)
    } else {
        format!("{d}")
    }
}

/// A time as a `SystemTime` (clamped to the epoch).
pub(super) fn system_time(seconds: f64) -> SystemTime {
    UNIX_EPOCH + Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or_default()
}

/// Applies a binary operator, per the article's table of operations.
pub(super) fn binary(op: &str, a: Value, b: Value) -> Result<Value, String> {
    use Value::*;
    let arith = |x: f64, y: f64| -> Result<f64, String> {
        let r = match op {
            "+" => x + y,
            "-" => x - y,
            "*" => x * y,
            "/" if y == 0.0 => return Err("division by zero".into()),
            "/" => x / y,
            _ => return Err(format!("`{op}` does not apply here")),
        };
        if r.is_finite() {
            Ok(r)
        } else {
            Err(format!("`{x} {op} {y}` is not a finite number"))
        }
    };
    let compare = |o: std::cmp::Ordering| -> Result<Value, String> {
        use std::cmp::Ordering::*;
        let r = match op {
            "<" => o == Less,
            "<=" => o != Greater,
            "==" => o == Equal,
            "!=" => o != Equal,
            ">=" => o != Less,
            ">" => o == Greater,
            _ => unreachable!("only comparisons reach here"),
        };
        Ok(Double(if r { 1.0 } else { 0.0 }))
    };
    let order = |x: f64, y: f64| x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
    let comparison = matches!(op, "<" | "<=" | "==" | "!=" | ">=" | ">");
    match (op, a, b) {
        ("&&" | "||", Double(x), Double(y)) => {
            let r = if op == "&&" {
                x != 0.0 && y != 0.0
            } else {
                x != 0.0 || y != 0.0
            };
            Ok(Double(if r { 1.0 } else { 0.0 }))
        }
        (_, Double(x), Double(y)) if comparison => compare(order(x, y)),
        (_, Str(x), Str(y)) if comparison => compare(x.cmp(&y)),
        (_, Time(x), Time(y)) if comparison => compare(order(x, y)),
        (_, Interval(x), Interval(y)) if comparison => compare(order(x, y)),
        ("+" | "-" | "*" | "/", Double(x), Double(y)) => Ok(Double(arith(x, y)?)),
        ("*", Double(x), Interval(y)) | ("*", Interval(y), Double(x)) => Ok(Interval(arith(y, x)?)),
        ("/", Interval(x), Double(y)) => Ok(Interval(arith(x, y)?)),
        ("+" | "-", Interval(x), Interval(y)) => Ok(Interval(arith(x, y)?)),
        ("+", Interval(x), Time(y)) | ("+", Time(y), Interval(x)) => Ok(Time(arith(y, x)?)),
        ("-", Time(x), Time(y)) => Ok(Interval(arith(x, y)?)),
        ("+" | "-" | "*" | "/", Vec(v), Double(y)) => Ok(Vec(v
            .iter()
            .map(|x| arith(*x, y))
            .collect::<Result<_, _>>()?)),
        ("+" | "-" | "*" | "/", Vec(v), Vec(w)) => {
            if v.len() != w.len() {
                return Err(format!(
                    "`{op}` of doubleVecs of lengths {} and {}",
                    v.len(),
                    w.len()
                ));
            }
            Ok(Vec(v
                .iter()
                .zip(&w)
                .map(|(x, y)| arith(*x, *y))
                .collect::<Result<_, _>>()?))
        }
        (_, a, b) => Err(format!(
            "`{op}` does not apply to a {} and a {}",
            a.kind(),
            b.kind()
        )),
    }
}

/// Applies a unary operator: `-` (double, timeinterval) or `!` (double).
pub(super) fn unary(op: &str, v: Value) -> Result<Value, String> {
    match (op, v) {
        ("-", Value::Double(d)) => Ok(Value::Double(-d)),
        ("-", Value::Interval(d)) => Ok(Value::Interval(-d)),
        ("!", Value::Double(d)) => Ok(Value::Double(if d == 0.0 { 1.0 } else { 0.0 })),
        (op, v) => Err(format!("`{op}` does not apply to a {}", v.kind())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_of_operations() {
        let d = Value::Double;
        assert_eq!(
            binary("*", d(2.0), Value::Interval(60.0)),
            Ok(Value::Interval(120.0))
        );
        assert_eq!(
            binary("/", Value::Interval(60.0), d(2.0)),
            Ok(Value::Interval(30.0))
        );
        assert_eq!(
            binary("+", Value::Time(10.0), Value::Interval(5.0)),
            Ok(Value::Time(15.0))
        );
        assert_eq!(
            binary("-", Value::Time(10.0), Value::Time(4.0)),
            Ok(Value::Interval(6.0))
        );
        assert_eq!(
            binary("*", Value::Vec(vec![1.0, 2.0]), d(3.0)),
            Ok(Value::Vec(vec![3.0, 6.0]))
        );
        assert_eq!(binary("<", d(1.0), d(2.0)), Ok(d(1.0)));
        assert_eq!(
            binary("==", Value::Str("a".into()), Value::Str("a".into())),
            Ok(d(1.0))
        );
        assert_eq!(binary("&&", d(1.0), d(0.0)), Ok(d(0.0)));
        assert!(binary("/", d(1.0), d(0.0)).is_err());
        assert!(binary("+", d(1.0), Value::Str("a".into())).is_err());
        assert!(binary("*", d(1e308), d(10.0)).is_err());
        assert_eq!(unary("!", d(0.0)), Ok(d(1.0)));
        assert_eq!(Value::Vec(vec![1.0, 2.5]).show(), "[1,2.5]");
    }
}
