//! List options: `$filter` (`field op 'value'` or `field op DateTime'…'` clauses, `op` one of
//! `eq ne gt ge lt le`, joined by `and` / `or`), `$select`,
//! `maxresults` and paging by `odata.nextLink`.

use serde_json::{Map, Value};

use super::error::BatchError;

/// The options of a list request.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ListOptions {
    filter: Option<Filter>,
    select: Option<Vec<String>>,
    max_results: usize,
    skip: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Filter {
    Compare(String, Op, String),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
}

/// A comparison operator of a `$filter` clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn parse(word: &str) -> Option<Op> {
        Some(match word {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            _ => return None,
        })
    }

    fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Op::Eq => ordering == Equal,
            Op::Ne => ordering != Equal,
            Op::Gt => ordering == Greater,
            Op::Ge => ordering != Less,
            Op::Lt => ordering == Less,
            Op::Le => ordering != Greater,
        }
    }
}

/// The most items one list page returns by default and at most.
pub const MAX_RESULTS: usize = 1000;

impl ListOptions {
    /// Reads the options from query pairs.
    pub fn parse(query: &[(String, String)]) -> Result<ListOptions, BatchError> {
        let mut options = ListOptions {
            max_results: MAX_RESULTS,
            ..ListOptions::default()
        };
        for (k, v) in query {
            match k.as_str() {
                "$filter" if !v.is_empty() => options.filter = Some(parse_filter(v)?),
                "$select" if !v.is_empty() => {
                    options.select = Some(v.split(',').map(|s| s.trim().to_string()).collect())
                }
                "maxresults" => {
                    options.max_results = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_RESULTS).contains(n))
                        .ok_or_else(|| query_error("maxresults", v))?;
                }
                "$skiptoken" => {
                    options.skip = v.parse().map_err(|_| query_error("$skiptoken", v))?;
                }
                _ => {}
            }
        }
        Ok(options)
    }

    /// One page of matching items (projected by `$select`), and the offset of the next page.
    pub fn page<'a>(
        &self,
        items: impl Iterator<Item = &'a Map<String, Value>>,
    ) -> (Vec<Value>, Option<usize>) {
        let matching: Vec<&Map<String, Value>> = items
            .filter(|item| self.filter.as_ref().is_none_or(|f| matches(f, item)))
            .collect();
        let end = self
            .skip
            .saturating_add(self.max_results)
            .min(matching.len());
        let page = matching
            .get(self.skip..end)
            .unwrap_or_default()
            .iter()
            .map(|item| Value::Object(self.project(item)))
            .collect();
        let next = (end < matching.len()).then_some(end);
        (page, next)
    }

    fn project(&self, item: &Map<String, Value>) -> Map<String, Value> {
        match &self.select {
            None => item.clone(),
            Some(fields) => item
                .iter()
                .filter(|(k, _)| fields.iter().any(|f| f == *k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

fn query_error(name: &str, value: &str) -> BatchError {
    BatchError::new(
        axum::http::StatusCode::BAD_REQUEST,
        "InvalidQueryParameterValue",
        "Value for one of the query parameters specified in the request URI is invalid.",
    )
    .with("QueryParameterName", name)
    .with("QueryParameterValue", value)
}

fn matches(filter: &Filter, item: &Map<String, Value>) -> bool {
    match filter {
        Filter::Compare(field, op, value) => {
            let ordering = match item.get(field) {
                Some(Value::String(s)) => compare_text(s, value),
                Some(Value::Number(n)) => match (n.as_f64(), value.parse::<f64>()) {
                    (Some(a), Ok(b)) => a.partial_cmp(&b),
                    _ => None,
                },
                Some(Value::Bool(b)) => Some(b.to_string().as_str().cmp(value.as_str())),
                _ => None,
            };
            ordering.is_some_and(|o| op.holds(o))
        }
        Filter::And(a, b) => matches(a, item) && matches(b, item),
        Filter::Or(a, b) => matches(a, item) || matches(b, item),
    }
}

/// Compares two values as times when both are RFC 3339 times, else as text.
fn compare_text(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    match (
        humantime::parse_rfc3339_weak(a),
        humantime::parse_rfc3339_weak(b),
    ) {
        (Ok(x), Ok(y)) => Some(x.cmp(&y)),
        _ => Some(a.cmp(b)),
    }
}

/// Parses `a eq 'x' and b eq 'y' or c eq 'z'` (`and` binds tighter than `or`).
fn parse_filter(text: &str) -> Result<Filter, BatchError> {
    let bad = || query_error("$filter", text);
    let ors: Vec<&str> = split_keyword(text, " or ");
    let mut or_terms = Vec::new();
    for part in ors {
        let mut and_terms = Vec::new();
        for clause in split_keyword(part, " and ") {
            let clause = clause
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .trim();
            let mut words = clause.splitn(3, ' ');
            let (field, op, value) = (
                words.next().unwrap_or(""),
                words.next().and_then(Op::parse).ok_or_else(bad)?,
                words.next().ok_or_else(bad)?.trim(),
            );
            let quoted = |v: &str| {
                v.strip_prefix('\'')
                    .and_then(|v| v.strip_suffix('\''))
                    .map(str::to_string)
            };
            let value = match value
                .strip_prefix("DateTime")
                .or(value.strip_prefix("datetime"))
            {
                Some(time) => quoted(time)
                    .filter(|t| humantime::parse_rfc3339_weak(t).is_ok())
                    .ok_or_else(bad)?,
                None => match quoted(value) {
                    // Text compares only for (in)equality, as in the service.
                    Some(_) if !matches!(op, Op::Eq | Op::Ne) => return Err(bad()),
                    Some(text) => text,
                    // Unquoted: numbers and booleans only.
                    None if op == Op::Eq || op == Op::Ne || value.parse::<f64>().is_ok() => {
                        value.to_string()
                    }
                    None => return Err(bad()),
                },
            };
            let field = field.trim();
            if field.is_empty() || !field.chars().all(|c| c.is_ascii_alphanumeric() || c == '/') {
                return Err(bad());
            }
            and_terms.push(Filter::Compare(field.to_string(), op, value));
        }
        let joined = and_terms
            .into_iter()
            .reduce(|a, b| Filter::And(Box::new(a), Box::new(b)))
            .ok_or_else(bad)?;
        or_terms.push(joined);
    }
    or_terms
        .into_iter()
        .reduce(|a, b| Filter::Or(Box::new(a), Box::new(b)))
        .ok_or_else(bad)
}

/// Splits on a keyword outside quoted strings.
fn split_keyword<'a>(text: &'a str, keyword: &str) -> Vec<&'a str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\'' {
            quoted = !quoted;
        } else if !quoted && bytes[i..].starts_with(keyword.as_bytes()) {
            parts.push(&text[start..i]);
            i += keyword.len();
            start = i;
            continue;
        }
        i += 1;
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, state: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), Value::from(id));
        m.insert("state".into(), Value::from(state));
        m
    }

    #[test]
    fn hostile_queries_are_errors_or_empty_pages_not_panics() {
        let items: Vec<Map<String, Value>> =
            vec![serde_json::from_value(serde_json::json!({"id": "a"})).unwrap()];
        for pairs in [
            vec![("$filter", "é eq 'x'")],
            vec![("$filter", "id eq 'é' and é eq 'x'")],
            vec![("$skiptoken", "18446744073709551615")],
            vec![
                ("$skiptoken", "18446744073709551615"),
                ("maxresults", "1000"),
            ],
        ] {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if let Ok(q) = ListOptions::parse(&pairs) {
                let _ = q.page(items.iter());
            }
        }
    }

    #[test]
    fn filters_select_and_pages() {
        let items = [
            item("a", "active"),
            item("b", "completed"),
            item("c", "completed"),
        ];
        let q = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            ListOptions::parse(&pairs).unwrap()
        };
        let (page, next) = q(&[("$filter", "state eq 'completed'")]).page(items.iter());
        assert_eq!(page.len(), 2);
        assert_eq!(next, None);
        let (page, _) = q(&[("$filter", "state eq 'active' or id eq 'c'")]).page(items.iter());
        assert_eq!(page.len(), 2);
        let (page, _) = q(&[("$filter", "state eq 'completed' and id eq 'b'")]).page(items.iter());
        assert_eq!(page.len(), 1);
        let (page, next) = q(&[("maxresults", "2"), ("$select", "id")]).page(items.iter());
        assert_eq!(page.len(), 2);
        assert_eq!(next, Some(2));
        assert_eq!(page[0], serde_json::json!({"id": "a"}));
        let (page, next) = q(&[("maxresults", "2"), ("$skiptoken", "2")]).page(items.iter());
        assert_eq!((page.len(), next), (1, None));
        assert!(ListOptions::parse(&[("$filter".into(), "state gt x".into())]).is_err());
        assert!(ListOptions::parse(&[("$filter".into(), "state gt 'x'".into())]).is_err());
        assert!(ListOptions::parse(&[("$filter".into(), "state like 'x'".into())]).is_err());
        let mut late = item("d", "completed");
        late.insert(
            "stateTransitionTime".into(),
            Value::from("2026-01-02T00:00:00.0000000Z"),
        );
        let mut early = item("e", "completed");
        early.insert(
            "stateTransitionTime".into(),
            Value::from("2026-01-01T00:00:00.5000000Z"),
        );
        let timed = [late, early];
        let (page, _) = q(&[(
            "$filter",
            "state eq 'completed' and stateTransitionTime gt DateTime'2026-01-01T00:00:01Z'",
        )])
        .page(timed.iter());
        assert_eq!(page.len(), 1);
        assert_eq!(page[0]["id"], "d");
        let (page, _) = q(&[("$filter", "state ne 'completed'")]).page(items.iter());
        assert_eq!(page.len(), 1);
        assert!(ListOptions::parse(&[("maxresults".into(), "0".into())]).is_err());
    }
}
