//! Queries: the structured form and the small language parsed into it.
//!
//! ```text
//! query    := or
//! or       := and ( "OR" and )*
//! and      := unary ( ["AND"] unary )*          juxtaposition is AND
//! unary    := ( "NOT" | "-" ) unary | primary
//! primary  := "(" or ")" | field ":" operand | operand
//! operand  := "(" or ")" | '"' words '"' | word | word "*"
//! field    := from | to | cc | subject | body | attachment | filename
//! ```
//!
//! `AND`, `OR` and `NOT` are operators in capitals only; in lower case they
//! are words. A word that splits into several tokens (`e-mail`) is a phrase.
//! A word with an `@` is matched as a whole address. `pre*` matches every
//! term starting with `pre`. An empty query matches every mail (filters and
//! paging still apply).

use crate::constants::{PHRASE_TERMS_MAX, QUERY_BYTES_MAX, QUERY_DEPTH_MAX, QUERY_NODES_MAX};
use crate::doc::Field;
use crate::error::{Error, Result};
use crate::tokenize::{normalize_prefix, query_words, tokenize};

/// A query over one user's mail. Terms are stored normalized (as the
/// tokenizer makes them); build them with the constructors or
/// [`parse_query`]. `field: None` means any field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// Every live mail.
    All,
    Term {
        field: Option<Field>,
        term: String,
    },
    Prefix {
        field: Option<Field>,
        prefix: String,
    },
    /// Consecutive terms in one field.
    Phrase {
        field: Option<Field>,
        terms: Vec<String>,
    },
    And(Vec<Query>),
    Or(Vec<Query>),
    Not(Box<Query>),
}

impl Query {
    /// A word as a query: a term, or a phrase if it splits into several
    /// tokens; `None` if it has no letters or digits.
    pub fn word(field: Option<Field>, word: &str) -> Option<Query> {
        let mut words = query_words(word);
        match words.len() {
            0 => None,
            1 => Some(Query::Term {
                field,
                term: words.pop().unwrap_or_default(),
            }),
            _ => Some(Query::Phrase {
                field,
                terms: words,
            }),
        }
    }

    /// A phrase from free text; `None` if it has no words.
    pub fn phrase(field: Option<Field>, text: &str) -> Option<Query> {
        let mut terms = Vec::new();
        tokenize(text, 0, |token, _| {
            if !token.contains('@') {
                terms.push(token.to_string());
            }
        });
        match terms.len() {
            0 => None,
            1 => Some(Query::Term {
                field,
                term: terms.pop().unwrap_or_default(),
            }),
            _ => Some(Query::Phrase { field, terms }),
        }
    }

    /// A prefix query; `None` if the prefix normalizes to nothing.
    pub fn prefix(field: Option<Field>, prefix: &str) -> Option<Query> {
        let prefix = normalize_prefix(prefix);
        (!prefix.is_empty()).then_some(Query::Prefix { field, prefix })
    }

    pub fn node_count(&self) -> usize {
        match self {
            Query::And(items) | Query::Or(items) => {
                1 + items.iter().map(Query::node_count).sum::<usize>()
            }
            Query::Not(inner) => 1 + inner.node_count(),
            _ => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Minus,
    Quoted(String),
    Word(String),
}

fn lex(text: &str) -> Result<Vec<(Token, usize)>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'(' {
            out.push((Token::Open, i));
            i += 1;
        } else if c == b')' {
            out.push((Token::Close, i));
            i += 1;
        } else if c == b'"' {
            let end = text[i + 1..].find('"').ok_or_else(|| Error::QuerySyntax {
                position: i,
                message: "unterminated quote".into(),
            })?;
            out.push((Token::Quoted(text[i + 1..i + 1 + end].to_string()), i));
            i += end + 2;
        } else if c == b'-'
            && bytes
                .get(i + 1)
                .is_some_and(|n| !n.is_ascii_whitespace() && *n != b')')
            && out
                .last()
                .is_none_or(|(t, at)| !matches!(t, Token::Word(w) if at + w.len() == i))
        {
            out.push((Token::Minus, i));
            i += 1;
        } else {
            let start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() && !b"()\"".contains(&bytes[i])
            {
                i += 1;
            }
            out.push((Token::Word(text[start..i].to_string()), start));
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    at: usize,
    end: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(t, _)| t)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.at).map_or(self.end, |(_, p)| *p)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T> {
        Err(Error::QuerySyntax {
            position: self.position(),
            message: message.into(),
        })
    }

    fn or(&mut self, field: Option<Field>) -> Result<Query> {
        let mut items = vec![self.and(field)?];
        while matches!(self.peek(), Some(Token::Word(w)) if w == "OR") {
            self.at += 1;
            items.push(self.and(field)?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Query::All)
        } else {
            Query::Or(items)
        })
    }

    fn and(&mut self, field: Option<Field>) -> Result<Query> {
        let mut items = Vec::new();
        loop {
            match self.peek() {
                None | Some(Token::Close) => break,
                Some(Token::Word(w)) if w == "OR" => break,
                Some(Token::Word(w)) if w == "AND" => {
                    self.at += 1;
                }
                _ => items.push(self.unary(field)?),
            }
        }
        match items.len() {
            0 => self.error("expected a term"),
            1 => Ok(items.pop().unwrap_or(Query::All)),
            _ => Ok(Query::And(items)),
        }
    }

    fn unary(&mut self, field: Option<Field>) -> Result<Query> {
        match self.peek() {
            Some(Token::Minus) => {
                self.at += 1;
                Ok(Query::Not(Box::new(self.unary(field)?)))
            }
            Some(Token::Word(w)) if w == "NOT" => {
                self.at += 1;
                Ok(Query::Not(Box::new(self.unary(field)?)))
            }
            _ => self.primary(field),
        }
    }

    fn primary(&mut self, field: Option<Field>) -> Result<Query> {
        let position = self.position();
        match self.peek().cloned() {
            Some(Token::Open) => {
                if self.depth >= QUERY_DEPTH_MAX {
                    return self.error("parentheses nested too deep");
                }
                self.at += 1;
                self.depth += 1;
                let inner = self.or(field)?;
                self.depth -= 1;
                if self.peek() != Some(&Token::Close) {
                    return self.error("expected ')'");
                }
                self.at += 1;
                Ok(inner)
            }
            Some(Token::Quoted(text)) => {
                self.at += 1;
                let query = Query::phrase(field, &text).ok_or_else(|| Error::QuerySyntax {
                    position,
                    message: "the phrase has no words".into(),
                })?;
                if let Query::Phrase { terms, .. } = &query {
                    if terms.len() > PHRASE_TERMS_MAX {
                        return Err(Error::QueryTooBroad(format!(
                            "a phrase of {} words, over the limit of {PHRASE_TERMS_MAX}",
                            terms.len()
                        )));
                    }
                }
                Ok(query)
            }
            Some(Token::Word(word)) => {
                self.at += 1;
                if let Some((name, rest)) = word.split_once(':') {
                    if let Some(named) = Field::from_name(name) {
                        if rest.is_empty() {
                            return match self.peek() {
                                Some(Token::Open | Token::Quoted(_) | Token::Word(_)) => {
                                    self.primary(Some(named))
                                }
                                _ => self.error(format!("expected a term after '{name}:'")),
                            };
                        }
                        return atom(Some(named), rest, position);
                    }
                }
                atom(field, &word, position)
            }
            Some(Token::Minus) => self.unary(field),
            Some(Token::Close) => self.error("unexpected ')'"),
            None => self.error("expected a term"),
        }
    }
}

fn atom(field: Option<Field>, word: &str, position: usize) -> Result<Query> {
    if let Some(stem) = word.strip_suffix('*') {
        return Query::prefix(field, stem.trim_end_matches('*')).ok_or_else(|| {
            Error::QuerySyntax {
                position,
                message: format!("the prefix '{word}' has no letters or digits"),
            }
        });
    }
    Query::word(field, word).ok_or_else(|| Error::QuerySyntax {
        position,
        message: format!("'{word}' has no letters or digits"),
    })
}

/// Parses the query language (see the module docs).
pub fn parse_query(text: &str) -> Result<Query> {
    if text.len() > QUERY_BYTES_MAX {
        return Err(Error::QueryTooBroad(format!(
            "a query of {} bytes, over the limit of {QUERY_BYTES_MAX}",
            text.len()
        )));
    }
    let tokens = lex(text)?;
    if tokens.is_empty() {
        return Ok(Query::All);
    }
    let mut parser = Parser {
        tokens,
        at: 0,
        end: text.len(),
        depth: 0,
    };
    let query = parser.or(None)?;
    if parser.at != parser.tokens.len() {
        return parser.error("unexpected ')'");
    }
    let nodes = query.node_count();
    if nodes > QUERY_NODES_MAX {
        return Err(Error::QueryTooBroad(format!(
            "{nodes} query nodes, over the limit of {QUERY_NODES_MAX}"
        )));
    }
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(field: Option<Field>, t: &str) -> Query {
        Query::Term {
            field,
            term: t.into(),
        }
    }

    #[test]
    fn parses_the_language() {
        assert_eq!(parse_query("  ").unwrap(), Query::All);
        assert_eq!(parse_query("Hello").unwrap(), term(None, "hello"));
        assert_eq!(
            parse_query("a b OR c").unwrap(),
            Query::Or(vec![
                Query::And(vec![term(None, "a"), term(None, "b")]),
                term(None, "c")
            ])
        );
        assert_eq!(
            parse_query("from:Alice -spam NOT subject:\"Big Deal\"").unwrap(),
            Query::And(vec![
                term(Some(Field::From), "alice"),
                Query::Not(Box::new(term(None, "spam"))),
                Query::Not(Box::new(Query::Phrase {
                    field: Some(Field::Subject),
                    terms: vec!["big".into(), "deal".into()]
                })),
            ])
        );
        assert_eq!(
            parse_query("to:(bob@x.org OR car*) AND e-mail").unwrap(),
            Query::And(vec![
                Query::Or(vec![
                    term(Some(Field::To), "bob@x.org"),
                    Query::Prefix {
                        field: Some(Field::To),
                        prefix: "car".into()
                    }
                ]),
                Query::Phrase {
                    field: None,
                    terms: vec!["e".into(), "mail".into()]
                }
            ])
        );
        assert_eq!(parse_query("and or").unwrap().node_count(), 3);
        assert_eq!(parse_query("10:30").unwrap().node_count(), 1);
        assert_eq!(parse_query("well-known").unwrap().node_count(), 1);
    }

    #[test]
    fn rejects_bad_queries() {
        for bad in ["(", "a)", "\"x", "!!!", "*", "from:", "a OR", "NOT", "\"\""] {
            assert!(
                matches!(parse_query(bad), Err(Error::QuerySyntax { .. })),
                "{bad}"
            );
        }
        let long = "a ".repeat(QUERY_NODES_MAX + 1);
        assert!(matches!(parse_query(&long), Err(Error::QueryTooBroad(_))));
        let deep = format!("{}a{}", "(".repeat(40), ")".repeat(40));
        assert!(parse_query(&deep).is_err());
    }
}
