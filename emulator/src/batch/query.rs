//! List options: `$filter` (`field eq 'value'` clauses joined by `and` / `or`), `$select`,
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
    Eq(String, String),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
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
        let end = (self.skip + self.max_results).min(matching.len());
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
        Filter::Eq(field, value) => match item.get(field) {
            Some(Value::String(s)) => s == value,
            Some(Value::Number(n)) => n.to_string() == *value,
            Some(Value::Bool(b)) => b.to_string() == *value,
            _ => false,
        },
        Filter::And(a, b) => matches(a, item) && matches(b, item),
        Filter::Or(a, b) => matches(a, item) || matches(b, item),
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
            let (field, value) = clause.split_once(" eq ").ok_or_else(bad)?;
            let value = value.trim();
            let value = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(value);
            let field = field.trim();
            if field.is_empty() || !field.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(bad());
            }
            and_terms.push(Filter::Eq(field.to_string(), value.to_string()));
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
        } else if !quoted && text[i..].starts_with(keyword) {
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
        assert!(ListOptions::parse(&[("$filter".into(), "state gt 1".into())]).is_err());
        assert!(ListOptions::parse(&[("maxresults".into(), "0".into())]).is_err());
    }
}
