//! A small subset of the Batch autoscale formula language: statements
//! `$TargetDedicatedNodes = EXPR;` and `$TargetLowPriorityNodes = EXPR;` where EXPR uses
//! integers, `$PendingTasks`, `$ActiveTasks`, `$RunningTasks` (with an optional
//! `.GetSample(...)`, read as the current value), `min`, `max`, `+ - * /` and parentheses.

use std::collections::HashMap;

/// What a formula sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Targets {
    /// `$TargetDedicatedNodes`, if set.
    pub dedicated: Option<i64>,
    /// `$TargetLowPriorityNodes`, if set.
    pub low_priority: Option<i64>,
}

/// Evaluates a formula with the given variable values; an error names what is not understood.
pub fn evaluate(formula: &str, vars: &HashMap<&str, i64>) -> Result<Targets, String> {
    let mut targets = Targets::default();
    let mut locals: HashMap<String, i64> = HashMap::new();
    for statement in formula.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, expr) = statement
            .split_once('=')
            .ok_or_else(|| format!("`{statement}` is not an assignment"))?;
        let name = name.trim();
        if name == "$NodeDeallocationOption" {
            continue; // an option name, not a number; nodes are emulated
        }
        let value = Parser::new(expr, vars, &locals).parse()?.max(0);
        match name {
            "$TargetDedicatedNodes" => targets.dedicated = Some(value),
            "$TargetLowPriorityNodes" => targets.low_priority = Some(value),
            other if other.starts_with('$') => {
                return Err(format!("`{other}` cannot be assigned in this emulator"));
            }
            other => {
                locals.insert(other.to_string(), value);
            }
        }
    }
    Ok(targets)
}

/// How deeply parentheses, `min`/`max` and unary minus may nest (the stack stays small).
const MAX_DEPTH: usize = 64;

struct Parser<'a> {
    tokens: Vec<String>,
    at: usize,
    depth: usize,
    vars: &'a HashMap<&'a str, i64>,
    locals: &'a HashMap<String, i64>,
}

impl<'a> Parser<'a> {
    fn new(text: &str, vars: &'a HashMap<&'a str, i64>, locals: &'a HashMap<String, i64>) -> Self {
        let mut tokens = Vec::new();
        let mut current = String::new();
        for c in text.chars() {
            if c.is_alphanumeric() || c == '$' || c == '_' || c == '.' {
                current.push(c);
            } else {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
                if !c.is_whitespace() {
                    tokens.push(c.to_string());
                }
            }
        }
        if !current.is_empty() {
            tokens.push(current);
        }
        Parser {
            tokens,
            at: 0,
            depth: 0,
            vars,
            locals,
        }
    }

    fn parse(mut self) -> Result<i64, String> {
        let value = self.sum()?;
        match self.tokens.get(self.at) {
            None => Ok(value),
            Some(t) => Err(format!("unexpected `{t}` in an autoscale formula")),
        }
    }

    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.at).map(String::as_str)
    }

    fn next(&mut self) -> Option<String> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn sum(&mut self) -> Result<i64, String> {
        let mut value = self.product()?;
        while let Some(op @ ("+" | "-")) = self.peek() {
            let op = op.to_string();
            self.at += 1;
            let rhs = self.product()?;
            value = if op == "+" {
                value.checked_add(rhs)
            } else {
                value.checked_sub(rhs)
            }
            .ok_or_else(overflow)?;
        }
        Ok(value)
    }

    fn product(&mut self) -> Result<i64, String> {
        let mut value = self.atom()?;
        while let Some(op @ ("*" | "/")) = self.peek() {
            let op = op.to_string();
            self.at += 1;
            let rhs = self.atom()?;
            value = if op == "*" {
                value.checked_mul(rhs).ok_or_else(overflow)?
            } else if rhs == 0 {
                return Err("division by zero in an autoscale formula".into());
            } else {
                value.checked_div(rhs).ok_or_else(overflow)?
            };
        }
        Ok(value)
    }

    /// An atom, one level deeper than the caller.
    fn atom(&mut self) -> Result<i64, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!(
                "an autoscale formula nests more than {MAX_DEPTH} levels deep"
            ));
        }
        let value = self.atom_inner();
        self.depth -= 1;
        value
    }

    fn atom_inner(&mut self) -> Result<i64, String> {
        let token = self.next().ok_or("an autoscale formula ends too early")?;
        if token == "(" {
            let value = self.sum()?;
            return self.expect(")").map(|_| value);
        }
        if token == "-" {
            return self.atom()?.checked_neg().ok_or_else(overflow);
        }
        if let Ok(n) = token.parse::<i64>() {
            return Ok(n);
        }
        if token == "min" || token == "max" {
            self.expect("(")?;
            let a = self.sum()?;
            self.expect(",")?;
            let b = self.sum()?;
            self.expect(")")?;
            return Ok(if token == "min" { a.min(b) } else { a.max(b) });
        }
        // `$PendingTasks` or `$PendingTasks.GetSample` followed by `(...)`.
        let (name, sampled) = match token.split_once('.') {
            Some((name, method))
                if method.starts_with("GetSample") || method.starts_with("GetSamplePercent") =>
            {
                (name.to_string(), true)
            }
            Some(_) => return Err(format!("`{token}` is not supported in this emulator")),
            None => (token.clone(), false),
        };
        if sampled {
            self.expect("(")?;
            let mut depth = 1;
            while depth > 0 {
                match self.next().as_deref() {
                    Some("(") => depth += 1,
                    Some(")") => depth -= 1,
                    Some(_) => {}
                    None => return Err("unclosed `GetSample(`".into()),
                }
            }
        }
        if let Some(v) = self.vars.get(name.as_str()) {
            return Ok(*v);
        }
        self.locals
            .get(&name)
            .copied()
            .ok_or_else(|| format!("`{name}` is not known to this emulator's autoscale formulas"))
    }

    fn expect(&mut self, what: &str) -> Result<(), String> {
        // (Every nested `sum` starts at an atom, so the depth check covers parentheses too.)
        match self.next() {
            Some(t) if t == what => Ok(()),
            Some(t) => Err(format!("expected `{what}`, found `{t}`")),
            None => Err(format!("expected `{what}` at the end")),
        }
    }
}

fn overflow() -> String {
    "an autoscale formula overflows 64-bit integers".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas() {
        let vars = HashMap::from([
            ("$PendingTasks", 7),
            ("$ActiveTasks", 5),
            ("$RunningTasks", 2),
        ]);
        let t = evaluate(
            "pending = $PendingTasks.GetSample(1); $TargetDedicatedNodes = min(4, pending); $TargetLowPriorityNodes = max(0, (pending - 4) * 2); $NodeDeallocationOption = taskcompletion;",
            &vars,
        )
        .unwrap();
        assert_eq!(
            t,
            Targets {
                dedicated: Some(4),
                low_priority: Some(6)
            }
        );
        let t = evaluate("$TargetDedicatedNodes = $ActiveTasks / 2 - 10;", &vars).unwrap();
        assert_eq!(t.dedicated, Some(0), "targets are never negative");
        assert!(
            evaluate("$TargetDedicatedNodes = $Nope;", &vars)
                .unwrap_err()
                .contains("$Nope")
        );
        assert!(evaluate("$TargetDedicatedNodes = 1 / 0;", &vars).is_err());
        // Hostile formulas are errors, not crashes.
        let deep = format!(
            "$TargetDedicatedNodes = {}1{};",
            "(".repeat(100_000),
            ")".repeat(100_000)
        );
        assert!(evaluate(&deep, &vars).unwrap_err().contains("nests"));
        let minus = format!("$TargetDedicatedNodes = {}1;", "-".repeat(100_000));
        assert!(evaluate(&minus, &vars).unwrap_err().contains("nests"));
        let min = format!(
            "$TargetDedicatedNodes = {}1{};",
            "min(1,".repeat(100_000),
            ")".repeat(100_000)
        );
        assert!(evaluate(&min, &vars).is_err());
        for f in [
            "$TargetDedicatedNodes = (0 - 9223372036854775807 - 1) / (0 - 1);",
            "$TargetDedicatedNodes = 9223372036854775807 + 1;",
            "$TargetDedicatedNodes = 9223372036854775807 * 2;",
            "$TargetDedicatedNodes = -(0 - 9223372036854775807 - 1);",
        ] {
            assert!(evaluate(f, &vars).unwrap_err().contains("overflows"), "{f}");
        }
        assert!(evaluate("$CurrentDedicatedNodes = 1;", &vars).is_err());
    }
}
