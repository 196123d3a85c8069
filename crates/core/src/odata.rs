//! The part of OData's `$filter` that a sync's source filter and the
//! sandbox's Graph both speak: `property eq literal` clauses joined by `and`
//! or by `or`, with string literals in single quotes (`''` for a quote),
//! `true`, `false` and `null`.
//!
//! One parser and one evaluator, for two readers: the sandbox filters its
//! directory with it, and a delta run applies the sync's `source.filter`
//! to each record itself, because Graph's `/users/delta` takes no `$filter`
//! other than by id. Strings compare without case, as Entra does.

use serde_json::{Map, Value};

/// A filter this module cannot take. Permanent: the filter text must change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Not a well-formed filter (Graph answers 400 Bad Request).
    #[error("{0}")]
    Syntax(String),
    /// Well-formed OData beyond `eq` clauses joined one way (`ne`, `in`,
    /// `startswith(…)`, `and` mixed with `or`…).
    #[error("{0}")]
    Unsupported(String),
}

/// A clause's right-hand side.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Bool(bool),
    Null,
}

/// `prop eq value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    /// The property as written; matched without regard to case.
    pub prop: String,
    pub value: Literal,
}

impl Clause {
    fn matches(&self, record: &Map<String, Value>) -> bool {
        let actual = record
            .get(&self.prop)
            .or_else(|| record.iter().find(|(k, _)| k.eq_ignore_ascii_case(&self.prop)).map(|(_, v)| v))
            .unwrap_or(&Value::Null);
        match &self.value {
            Literal::Bool(b) => actual.as_bool() == Some(*b),
            Literal::Str(s) => actual.as_str().is_some_and(|a| a.to_lowercase() == s.to_lowercase()),
            Literal::Null => actual.is_null(),
        }
    }
}

/// How the clauses of a filter combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    And,
    Or,
}

/// A parsed `$filter`: clauses all joined by the same operator.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub join: Join,
    pub clauses: Vec<Clause>,
}

impl Filter {
    /// Parses `prop eq literal ((and|or) prop eq literal)*`. Only the syntax
    /// is checked; which properties exist is up to the caller.
    pub fn parse(raw: &str) -> Result<Filter, FilterError> {
        let syntax = |why: String| FilterError::Syntax(format!("Invalid filter clause: {why} in '{raw}'."));
        let mut clauses = Vec::new();
        let mut join = None;
        let mut it = tokenize(raw)?.into_iter();
        loop {
            let prop = match it.next() {
                Some(Token::Word(w)) => w,
                Some(Token::Quoted(q)) => return Err(syntax(format!("expected a property name, found '{q}'"))),
                None => return Err(syntax("expected a property name".into())),
            };
            match it.next() {
                Some(Token::Word(op)) if op.eq_ignore_ascii_case("eq") => {}
                Some(Token::Word(op)) => {
                    return Err(FilterError::Unsupported(format!(
                        "Unsupported or invalid query filter clause specified for property '{prop}' of resource \
                         'User': operator '{op}' is not supported (only eq)."
                    )));
                }
                _ => return Err(syntax(format!("expected 'eq' after '{prop}'"))),
            }
            let value = match it.next() {
                Some(Token::Quoted(s)) => Literal::Str(s),
                Some(Token::Word(w)) if w.eq_ignore_ascii_case("true") => Literal::Bool(true),
                Some(Token::Word(w)) if w.eq_ignore_ascii_case("false") => Literal::Bool(false),
                Some(Token::Word(w)) if w.eq_ignore_ascii_case("null") => Literal::Null,
                Some(Token::Word(w)) => return Err(syntax(format!("'{w}' is not a literal"))),
                None => return Err(syntax(format!("expected a value after '{prop} eq'"))),
            };
            clauses.push(Clause { prop, value });
            match it.next() {
                None => break,
                Some(Token::Word(w)) => {
                    let this = match w.to_ascii_lowercase().as_str() {
                        "and" => Join::And,
                        "or" => Join::Or,
                        _ => return Err(syntax(format!("expected 'and' or 'or', found '{w}'"))),
                    };
                    if join.is_some_and(|j| j != this) {
                        return Err(FilterError::Unsupported(
                            "Mixing 'and' and 'or' in one $filter is not supported.".into(),
                        ));
                    }
                    join = Some(this);
                }
                Some(Token::Quoted(q)) => return Err(syntax(format!("unexpected '{q}'"))),
            }
        }
        Ok(Filter { join: join.unwrap_or(Join::And), clauses })
    }

    /// Whether a record (a Graph user object) passes.
    pub fn matches(&self, record: &Map<String, Value>) -> bool {
        match self.join {
            Join::And => self.clauses.iter().all(|c| c.matches(record)),
            Join::Or => self.clauses.iter().any(|c| c.matches(record)),
        }
    }

    /// The properties the filter reads, as written, each once.
    pub fn properties(&self) -> Vec<&str> {
        let mut props: Vec<&str> = Vec::new();
        for c in &self.clauses {
            if !props.iter().any(|p| p.eq_ignore_ascii_case(&c.prop)) {
                props.push(&c.prop);
            }
        }
        props
    }
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
}

fn tokenize(raw: &str) -> Result<Vec<Token>, FilterError> {
    let word_char = |c: char| c.is_alphanumeric() || matches!(c, '_' | '.' | '/' | '-');
    let mut tokens = Vec::new();
    let mut chars = raw.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        s.push('\'');
                    }
                    Some('\'') => break,
                    Some(c) => s.push(c),
                    None => {
                        return Err(FilterError::Syntax(format!(
                            "Invalid filter clause: unterminated string literal in '{raw}'."
                        )));
                    }
                }
            }
            tokens.push(Token::Quoted(s));
        } else if word_char(c) {
            let mut w = String::new();
            while let Some(&c) = chars.peek().filter(|c| word_char(**c)) {
                w.push(c);
                chars.next();
            }
            tokens.push(Token::Word(w));
        } else {
            return Err(FilterError::Unsupported(format!(
                "Unsupported or invalid query filter clause: '{c}' in '{raw}'; only `property eq 'value'` \
                 clauses joined with `and` or with `or` are supported."
            )));
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn clauses_parse_with_quotes_and_one_join() {
        let f = Filter::parse("department eq 'O''Brien & Co' and accountEnabled eq false").unwrap();
        assert_eq!(f.join, Join::And);
        assert_eq!(
            f.clauses,
            [
                Clause { prop: "department".into(), value: Literal::Str("O'Brien & Co".into()) },
                Clause { prop: "accountEnabled".into(), value: Literal::Bool(false) },
            ]
        );
        assert_eq!(Filter::parse("city eq 'a' OR city eq null").unwrap().join, Join::Or);
        assert_eq!(Filter::parse("city eq 'a' or City eq 'b'").unwrap().properties(), ["city"]);
    }

    #[test]
    fn what_it_does_not_speak_is_refused_as_unsupported_or_bad_syntax() {
        let unsupported = [
            "city ne 'x'",
            "startswith(displayName,'A')",
            "city eq 'a' and city eq 'b' or city eq 'c'",
            "city in ('a','b')",
        ];
        for raw in unsupported {
            assert!(matches!(Filter::parse(raw), Err(FilterError::Unsupported(_))), "{raw}");
        }
        for raw in
            ["", "city eq 'x", "city eq x", "city", "'x' eq city", "city eq 'a' nor city eq 'b'", "city eq 'a' 'b'"]
        {
            assert!(matches!(Filter::parse(raw), Err(FilterError::Syntax(_))), "{raw:?}");
        }
    }

    #[test]
    fn records_match_without_case_in_values_and_names() {
        let user = record(json!({"city": "MÜNCHEN", "accountEnabled": true, "department": null}));
        assert!(Filter::parse("city eq 'münchen'").unwrap().matches(&user));
        assert!(Filter::parse("City eq 'münchen' and accountEnabled eq true").unwrap().matches(&user));
        assert!(!Filter::parse("accountEnabled eq false").unwrap().matches(&user));
        assert!(!Filter::parse("city eq 'Berlin' and accountEnabled eq true").unwrap().matches(&user));
        assert!(Filter::parse("city eq 'Berlin' or accountEnabled eq true").unwrap().matches(&user));
        // A property the record lacks is null, as Graph omits never-set ones.
        assert!(Filter::parse("department eq null and country eq null").unwrap().matches(&user));
        assert!(!Filter::parse("country eq 'Germany'").unwrap().matches(&user));
        // A string is not a boolean.
        assert!(!Filter::parse("accountEnabled eq 'true'").unwrap().matches(&user));
    }
}
