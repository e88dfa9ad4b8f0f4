//! Tokens of an autoscale formula: numbers, strings, names (`$Var`, `var`, `TimeInterval_Hour`),
//! operators and punctuation; `//` comments to the end of the line.

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Token {
    Number(f64),
    Str(String),
    Name(String),
    /// An operator or punctuation: `+ - * / ! < <= == != >= > && || ? : ( ) [ ] , . = ;`.
    Sym(&'static str),
}

const SYMBOLS: [&str; 23] = [
    "<=", "==", "!=", ">=", "&&", "||", "+", "-", "*", "/", "!", "<", ">", "?", ":", "(", ")", "[",
    "]", ",", ".", "=", ";",
];

/// Splits a formula into tokens; an error names what is not understood and where.
pub(super) fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            // An exponent: 1e3, 2.5E-2.
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                let mut j = i + 1;
                if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
                    j += 1;
                }
                if j < chars.len() && chars[j].is_ascii_digit() {
                    i = j;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let word: String = chars[start..i].iter().collect();
            let n = word
                .parse::<f64>()
                .map_err(|_| format!("`{word}` is not a number"))?;
            out.push(Token::Number(n));
        } else if c.is_alphabetic() || c == '$' || c == '_' {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Name(chars[start..i].iter().collect()));
        } else if c == '"' {
            let start = i + 1;
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
            if i >= chars.len() {
                return Err("a string is not closed with `\"`".into());
            }
            out.push(Token::Str(chars[start..i].iter().collect()));
            i += 1;
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let Some(sym) = SYMBOLS.iter().find(|s| rest.starts_with(**s)) else {
                return Err(format!("unexpected `{c}` in the formula"));
            };
            out.push(Token::Sym(sym));
            i += sym.len();
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_documented_forms() {
        let t =
            tokens("$x = a.GetSample(180 * TimeInterval_Second) <= 1.5e1 ? \"s\" : -2; // note")
                .unwrap();
        assert_eq!(t[0], Token::Name("$x".into()));
        assert!(t.contains(&Token::Sym("<=")));
        assert!(t.contains(&Token::Number(15.0)));
        assert!(t.contains(&Token::Str("s".into())));
        assert_eq!(t[t.len() - 2], Token::Number(2.0));
        assert_eq!(t.last(), Some(&Token::Sym(";")));
        assert!(tokens("a = #").is_err());
        assert!(tokens("a = \"open").is_err());
    }
}
