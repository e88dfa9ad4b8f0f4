//! The autoscale formula grammar (Microsoft's "Automatically scale compute nodes" article):
//!
//! ```text
//! formula   := statement (';' statement)* ';'?
//! statement := NAME '=' expr | expr
//! expr      := or ('?' expr ':' expr)?
//! or        := and ('||' and)*          and := compare ('&&' compare)*
//! compare   := sum (('<'|'<='|'=='|'!='|'>='|'>') sum)*
//! sum       := product (('+'|'-') product)*     product := unary (('*'|'/') unary)*
//! unary     := ('-'|'!') unary | postfix
//! postfix   := primary ('.' NAME ('(' args ')')?)*
//! primary   := NUMBER | STRING | NAME | NAME '(' args ')' | '(' expr ')' | '[' args ']'
//! ```

use super::lexer::Token;

/// An expression.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Expr {
    Number(f64),
    Str(String),
    Name(String),
    Vector(Vec<Expr>),
    Call(String, Vec<Expr>),
    /// `object.member` or `object.method(args)` (args `None` for a member).
    Member(Box<Expr>, String, Option<Vec<Expr>>),
    Unary(&'static str, Box<Expr>),
    Binary(&'static str, Box<Expr>, Box<Expr>),
    Ternary(Box<Expr>, Box<Expr>, Box<Expr>),
}

/// A statement: an assignment, or an expression evaluated for its effect (`stop()`).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Statement {
    Assign(String, Expr),
    Eval(Expr),
}

/// How deeply expressions may nest (the parser's stack stays small on hostile input).
const MAX_DEPTH: usize = 64;

/// Parses a formula's tokens into statements.
pub(super) fn statements(tokens: Vec<Token>) -> Result<Vec<Statement>, String> {
    let mut p = Parser {
        tokens,
        at: 0,
        depth: 0,
    };
    let mut out = Vec::new();
    while p.at < p.tokens.len() {
        if p.eat(";") {
            continue;
        }
        let statement = match (p.tokens.get(p.at), p.tokens.get(p.at + 1)) {
            (Some(Token::Name(name)), Some(Token::Sym("="))) => {
                let name = name.clone();
                p.at += 2;
                Statement::Assign(name, p.expr()?)
            }
            _ => Statement::Eval(p.expr()?),
        };
        out.push(statement);
        if p.at < p.tokens.len() && !p.eat(";") {
            return Err(format!("expected `;` before {}", p.describe()));
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn eat(&mut self, sym: &str) -> bool {
        if matches!(self.tokens.get(self.at), Some(Token::Sym(s)) if *s == sym) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, sym: &str) -> Result<(), String> {
        if self.eat(sym) {
            Ok(())
        } else {
            Err(format!("expected `{sym}` before {}", self.describe()))
        }
    }

    fn describe(&self) -> String {
        match self.tokens.get(self.at) {
            None => "the end of the formula".into(),
            Some(Token::Number(n)) => format!("`{n}`"),
            Some(Token::Str(s)) => format!("\"{s}\""),
            Some(Token::Name(n)) => format!("`{n}`"),
            Some(Token::Sym(s)) => format!("`{s}`"),
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!(
                "the formula nests more than {MAX_DEPTH} levels deep"
            ));
        }
        let condition = self.or()?;
        let result = if self.eat("?") {
            let yes = self.expr()?;
            self.expect(":")?;
            let no = self.expr()?;
            Ok(Expr::Ternary(
                Box::new(condition),
                Box::new(yes),
                Box::new(no),
            ))
        } else {
            Ok(condition)
        };
        self.depth -= 1;
        result
    }

    fn binary(
        &mut self,
        ops: &[&'static str],
        next: fn(&mut Parser) -> Result<Expr, String>,
    ) -> Result<Expr, String> {
        let mut left = next(self)?;
        while let Some(Token::Sym(s)) = self.tokens.get(self.at) {
            let Some(op) = ops.iter().find(|o| *o == s) else {
                break;
            };
            self.at += 1;
            let right = next(self)?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn or(&mut self) -> Result<Expr, String> {
        self.binary(&["||"], Parser::and)
    }

    fn and(&mut self) -> Result<Expr, String> {
        self.binary(&["&&"], Parser::compare)
    }

    fn compare(&mut self) -> Result<Expr, String> {
        self.binary(&["<", "<=", "==", "!=", ">=", ">"], Parser::sum)
    }

    fn sum(&mut self) -> Result<Expr, String> {
        self.binary(&["+", "-"], Parser::product)
    }

    fn product(&mut self) -> Result<Expr, String> {
        self.binary(&["*", "/"], Parser::unary)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        for op in ["-", "!"] {
            if self.eat(op) {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(format!(
                        "the formula nests more than {MAX_DEPTH} levels deep"
                    ));
                }
                let inner = self.unary()?;
                self.depth -= 1;
                return Ok(Expr::Unary(op, Box::new(inner)));
            }
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr, String> {
        let mut value = self.primary()?;
        while self.eat(".") {
            let Some(Token::Name(member)) = self.tokens.get(self.at).cloned() else {
                return Err(format!("expected a member name before {}", self.describe()));
            };
            self.at += 1;
            let args = if self.eat("(") {
                Some(self.args(")")?)
            } else {
                None
            };
            value = Expr::Member(Box::new(value), member, args);
        }
        Ok(value)
    }

    fn args(&mut self, close: &str) -> Result<Vec<Expr>, String> {
        let mut args = Vec::new();
        if self.eat(close) {
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat(close) {
                return Ok(args);
            }
            self.expect(",")?;
        }
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        match token {
            Some(Token::Number(n)) => Ok(Expr::Number(n)),
            Some(Token::Str(s)) => Ok(Expr::Str(s)),
            Some(Token::Name(name)) => {
                if self.eat("(") {
                    Ok(Expr::Call(name, self.args(")")?))
                } else {
                    Ok(Expr::Name(name))
                }
            }
            Some(Token::Sym("(")) => {
                let inner = self.expr()?;
                self.expect(")")?;
                Ok(inner)
            }
            Some(Token::Sym("[")) => Ok(Expr::Vector(self.args("]")?)),
            _ => {
                self.at -= 1;
                Err(format!("expected a value before {}", self.describe()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::lexer::tokens;
    use super::*;

    fn parse(text: &str) -> Result<Vec<Statement>, String> {
        statements(tokens(text)?)
    }

    #[test]
    fn precedence_and_forms() {
        let s = parse("x = 1 + 2 * 3 < 7 && !0 ? a.GetSample(1) : max(1, [2, 3]);").unwrap();
        let Statement::Assign(name, Expr::Ternary(cond, yes, no)) = &s[0] else {
            panic!("{s:?}")
        };
        assert_eq!(name, "x");
        assert!(matches!(**cond, Expr::Binary("&&", _, _)));
        assert!(matches!(**yes, Expr::Member(_, ref m, Some(_)) if m == "GetSample"));
        assert!(matches!(**no, Expr::Call(ref f, ref a) if f == "max" && a.len() == 2));
        assert_eq!(
            parse("stop();").unwrap(),
            vec![Statement::Eval(Expr::Call("stop".into(), vec![]))]
        );
        assert!(parse("x = 1 +;").unwrap_err().contains("expected a value"));
        assert!(parse("x = 1 y = 2").unwrap_err().contains("expected `;`"));
        let deep = format!("x = {}1{};", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse(&deep).unwrap_err().contains("nests"));
        let minus = format!("x = {}1;", "-".repeat(10_000));
        assert!(parse(&minus).unwrap_err().contains("nests"));
    }
}
