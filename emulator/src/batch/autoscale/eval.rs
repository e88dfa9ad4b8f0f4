//! Evaluating a parsed formula: variables, the built-in functions, `TimeInterval_*` constants,
//! timestamps and the sample methods of the service-defined metrics.

use std::collections::BTreeMap;

use super::parser::{Expr, Statement};
use super::samples::History;
use super::value::{Value, binary, system_time, unary};

/// The read-only service-defined variables (the metric objects).
pub(super) const METRICS: &[&str] = &[
    "$CPUPercent",
    "$WallClockSeconds",
    "$MemoryBytes",
    "$DiskBytes",
    "$DiskReadBytes",
    "$DiskWriteBytes",
    "$DiskReadOps",
    "$DiskWriteOps",
    "$NetworkInBytes",
    "$NetworkOutBytes",
    "$SampleNodeCount",
    "$ActiveTasks",
    "$RunningTasks",
    "$PendingTasks",
    "$SucceededTasks",
    "$FailedTasks",
    "$CurrentDedicatedNodes",
    "$CurrentLowPriorityNodes",
    "$PreemptedNodeCount",
    "$UsableNodeCount",
];
/// What `$NodeDeallocationOption` may be set to (written bare in formulas).
const DEALLOCATION: &[&str] = &["requeue", "terminate", "taskcompletion", "retaineddata"];

/// The state of one evaluation.
pub(super) struct Evaluation<'a> {
    pub history: &'a History,
    /// Now, in seconds since the epoch.
    pub now: f64,
    /// Variables assigned so far (service-defined read-write ones included).
    pub vars: BTreeMap<String, Value>,
}

impl Evaluation<'_> {
    /// Runs the statements in order; `stop()` ends the run early.
    pub(super) fn run(&mut self, statements: &[Statement]) -> Result<(), String> {
        for statement in statements {
            let (name, expr) = match statement {
                Statement::Assign(name, expr) => (Some(name), expr),
                Statement::Eval(expr) => (None, expr),
            };
            let value = match (name.map(String::as_str), expr) {
                (Some("$NodeDeallocationOption"), Expr::Name(option))
                    if DEALLOCATION.contains(&option.to_ascii_lowercase().as_str()) =>
                {
                    Value::Str(option.to_ascii_lowercase())
                }
                _ => self.eval(expr)?,
            };
            if value == Value::Stop {
                return Ok(());
            }
            let Some(name) = name else { continue };
            let name = canonical(name);
            if METRICS.contains(&name.as_str()) || name == "$TaskSlotsPerNode" {
                return Err(format!("{name} is read-only"));
            }
            if name == "$NodeDeallocationOption"
                && !matches!(&value, Value::Str(s) if DEALLOCATION.contains(&s.as_str()))
            {
                return Err(format!(
                    "$NodeDeallocationOption must be one of {}",
                    DEALLOCATION.join(", ")
                ));
            }
            self.vars.insert(name, value);
        }
        Ok(())
    }

    fn eval(&self, expr: &Expr) -> Result<Value, String> {
        match expr {
            Expr::Number(n) => Ok(Value::Double(*n)),
            Expr::Str(s) => Ok(Value::Str(s.clone())),
            Expr::Name(name) => self.name(name),
            Expr::Vector(items) => Ok(Value::Vec(self.list(items)?)),
            Expr::Unary(op, inner) => unary(op, self.latest(self.eval(inner)?)),
            Expr::Binary(op, a, b) => {
                binary(op, self.latest(self.eval(a)?), self.latest(self.eval(b)?))
            }
            Expr::Ternary(cond, yes, no) => {
                if self.latest(self.eval(cond)?).truth()? {
                    self.eval(yes)
                } else {
                    self.eval(no)
                }
            }
            Expr::Call(name, args) => self.call(name, args),
            Expr::Member(object, member, args) => {
                let object = self.eval(object)?;
                match (object, args) {
                    (Value::Metric(metric), Some(args)) => self.method(metric, member, args),
                    (Value::Time(t), None) => time_member(t, member),
                    (other, _) => Err(format!("a {} has no member `{member}`", other.kind())),
                }
            }
        }
    }

    /// A metric used as a number reads its latest sample.
    fn latest(&self, value: Value) -> Value {
        match value {
            Value::Metric(name) => Value::Double(self.history.latest(name)),
            other => other,
        }
    }

    fn name(&self, name: &str) -> Result<Value, String> {
        let name = canonical(name);
        if let Some(metric) = METRICS.iter().find(|m| **m == name) {
            return Ok(Value::Metric(metric));
        }
        if name == "$TaskSlotsPerNode" {
            return Ok(Value::Double(self.history.slots_per_node()));
        }
        if let Some(unit) = name.strip_prefix("TimeInterval_") {
            return interval(unit).map(Value::Interval);
        }
        self.vars
            .get(&name)
            .cloned()
            .ok_or_else(|| format!("`{name}` is used before it is assigned"))
    }

    /// A doubleVecList's values, flattened (a metric gives its latest sample).
    fn list(&self, args: &[Expr]) -> Result<Vec<f64>, String> {
        let mut out = Vec::new();
        for arg in args {
            match self.latest(self.eval(arg)?) {
                Value::Double(d) => out.push(d),
                Value::Vec(v) => out.extend(v),
                other => return Err(format!("a doubleVecList cannot hold a {}", other.kind())),
            }
        }
        Ok(out)
    }

    fn call(&self, name: &str, args: &[Expr]) -> Result<Value, String> {
        let values = || self.list(args);
        let nonempty = |v: Vec<f64>| {
            if v.is_empty() {
                Err(format!("{name}() of no values"))
            } else {
                Ok(v)
            }
        };
        let map = |f: fn(f64) -> f64| -> Result<Value, String> {
            match args {
                [one] => match self.latest(self.eval(one)?) {
                    Value::Double(d) => Ok(Value::Double(f(d))),
                    Value::Vec(v) => Ok(Value::Vec(v.into_iter().map(f).collect())),
                    other => Err(format!("{name}() of a {}", other.kind())),
                },
                _ => Err(format!("{name}() takes one argument")),
            }
        };
        let d = Value::Double;
        match name {
            "avg" => nonempty(values()?).map(|v| d(v.iter().sum::<f64>() / v.len() as f64)),
            "sum" => Ok(d(values()?.iter().sum())),
            "len" => Ok(d(values()?.len() as f64)),
            "min" => {
                nonempty(values()?).map(|v| d(v.iter().copied().fold(f64::INFINITY, f64::min)))
            }
            "max" => {
                nonempty(values()?).map(|v| d(v.iter().copied().fold(f64::NEG_INFINITY, f64::max)))
            }
            "range" => nonempty(values()?).map(|v| {
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                d(hi - lo)
            }),
            "norm" => Ok(d(values()?.iter().map(|x| x * x).sum::<f64>().sqrt())),
            "std" => {
                let v = values()?;
                if v.len() < 2 {
                    return Ok(d(0.0));
                }
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
                Ok(d(var.sqrt()))
            }
            "lg" => map(f64::log2),
            "ln" => map(f64::ln),
            "log" => map(f64::log10),
            "ceil" => map(f64::ceil),
            "floor" => map(f64::floor),
            "round" => map(f64::round),
            "rand" if args.is_empty() => Ok(d(self.history.random())),
            "stop" if args.is_empty() => Ok(Value::Stop),
            "percentile" | "val" => {
                let [v, x] = args else {
                    return Err(format!("{name}() takes a doubleVec and a double"));
                };
                let v = match self.latest(self.eval(v)?) {
                    Value::Vec(v) => v,
                    Value::Double(one) => vec![one],
                    other => return Err(format!("{name}() of a {}", other.kind())),
                };
                let x = self.latest(self.eval(x)?).double(name)?;
                if name == "val" {
                    return v
                        .get(x as usize)
                        .filter(|_| x >= 0.0)
                        .map(|v| d(*v))
                        .ok_or_else(|| {
                            format!("val(): index {x} is outside a doubleVec of {}", v.len())
                        });
                }
                let mut v = nonempty(v)?;
                v.sort_by(|a, b| a.total_cmp(b));
                let rank = ((x.clamp(0.0, 100.0) / 100.0) * (v.len() - 1) as f64).round() as usize;
                Ok(d(v[rank.min(v.len() - 1)]))
            }
            "time" => match args {
                [] => Ok(Value::Time(self.now)),
                [text] => match self.eval(text)? {
                    Value::Str(s) => parse_time(&s).map(Value::Time),
                    other => Err(format!("time() of a {}", other.kind())),
                },
                _ => Err("time() takes at most one argument".into()),
            },
            other => Err(format!(
                "`{other}` is not a function of the autoscale formula language"
            )),
        }
    }

    fn method(&self, metric: &'static str, method: &str, args: &[Expr]) -> Result<Value, String> {
        let values: Vec<Value> = args
            .iter()
            .map(|a| self.eval(a).map(|v| self.latest(v)))
            .collect::<Result<_, _>>()?;
        let h = self.history;
        match (method, values.as_slice()) {
            ("GetSample", [Value::Double(count)]) => Ok(Value::Vec(h.last(metric, *count))),
            ("GetSample", [start, rest @ ..]) => {
                let (end, percent) = match rest {
                    [] => (None, None),
                    [Value::Double(p)] => (None, Some(*p)),
                    [end] => (Some(end), None),
                    [end, Value::Double(p)] => (Some(end), Some(*p)),
                    _ => return Err("GetSample() takes at most three arguments".into()),
                };
                let window = self.window(start, end)?;
                let (samples, available) = h.window(metric, window);
                if let Some(p) = percent
                    && available < p
                {
                    return Err(format!(
                        "{metric}.GetSample(): {available:.0}% of the samples are available, {p}% were asked for"
                    ));
                }
                Ok(Value::Vec(samples))
            }
            ("GetSamplePercent", [start, rest @ ..]) if rest.len() <= 1 => {
                let window = self.window(start, rest.first())?;
                Ok(Value::Double(h.window(metric, window).1))
            }
            ("GetSamplePeriod", []) => Ok(Value::Interval(super::samples::PERIOD.as_secs_f64())),
            ("Count", []) => Ok(Value::Double(h.count() as f64)),
            ("HistoryBeginTime", []) => Ok(Value::Time(h.begin(self.now))),
            _ => Err(format!(
                "{metric}.{method}() is not a sample method with these arguments (GetSample, GetSamplePercent, GetSamplePeriod, Count, HistoryBeginTime)"
            )),
        }
    }

    /// A sample window as (from, to) in seconds since the epoch; intervals look back from now.
    fn window(&self, start: &Value, end: Option<&Value>) -> Result<(f64, f64), String> {
        let point = |v: &Value| match v {
            Value::Interval(back) => Ok(self.now - back),
            Value::Time(t) => Ok(*t),
            other => Err(format!(
                "a sample window is a timestamp or timeinterval, not a {}",
                other.kind()
            )),
        };
        let a = point(start)?;
        let b = match end {
            Some(end) => point(end)?,
            None => self.now,
        };
        Ok((a.min(b), a.max(b)))
    }
}

/// `$TargetDedicated` and `$TargetLowPriority` are the documented aliases.
fn canonical(name: &str) -> String {
    match name {
        "$TargetDedicated" => "$TargetDedicatedNodes".into(),
        "$TargetLowPriority" => "$TargetLowPriorityNodes".into(),
        "$CurrentDedicated" => "$CurrentDedicatedNodes".into(),
        other => other.to_string(),
    }
}

fn interval(unit: &str) -> Result<f64, String> {
    Ok(match unit {
        "Zero" => 0.0,
        "100ns" => 1e-7,
        "Microsecond" => 1e-6,
        "Millisecond" => 1e-3,
        "Second" => 1.0,
        "Minute" => 60.0,
        "Hour" => 3600.0,
        "Day" => 86_400.0,
        "Week" => 604_800.0,
        "Year" => 31_536_000.0,
        other => return Err(format!("TimeInterval_{other} is not a time interval")),
    })
}

/// `time("...")`: W3C-DTF (ISO 8601) or RFC 1123.
fn parse_time(text: &str) -> Result<f64, String> {
    let parsed = humantime::parse_rfc3339_weak(text.trim())
        .ok()
        .or_else(|| httpdate::parse_http_date(text.trim()).ok())
        .ok_or_else(|| format!("time(\"{text}\") is neither W3C-DTF nor RFC 1123"))?;
    Ok(parsed
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0))
}

/// A timestamp's members: year, month, day, weekday (0 Sunday … 6 Saturday), hour, minute,
/// second (UTC).
fn time_member(t: f64, member: &str) -> Result<Value, String> {
    let text = humantime::format_rfc3339_seconds(system_time(t)).to_string();
    let field = |from: usize, to: usize| text.get(from..to).and_then(|s| s.parse::<f64>().ok());
    let days = (t / 86_400.0).floor();
    let value = match member {
        "year" => field(0, 4),
        "month" => field(5, 7),
        "day" => field(8, 10),
        "hour" => field(11, 13),
        "minute" => field(14, 16),
        "second" => field(17, 19),
        "weekday" => Some((days + 4.0).rem_euclid(7.0)),
        other => return Err(format!("a timestamp has no member `{other}`")),
    };
    value
        .map(Value::Double)
        .ok_or_else(|| format!("cannot read the {member} of a timestamp"))
}
