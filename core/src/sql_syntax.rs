//! SQL split into the pieces an editor colours (keywords, strings, numbers, comments), by sqlparser's tokenizer,
//! the one DataFusion parses the SQL with, as datafusion-cli's highlighter does.

use std::ops::Range;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer, Whitespace};

/// What a piece of SQL is, for colouring it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlClass {
    /// Anything else: names, operators, punctuation, spaces.
    Plain,
    /// A keyword of SQL (`SELECT`, `GROUP`, `COUNT`, ...), not quoted.
    Keyword,
    /// A string literal, closed or not yet.
    String,
    /// A number.
    Number,
    /// A comment.
    Comment,
}

/// `text` cut into consecutive byte ranges that cover it whole, each with its class. SQL that does not tokenize (a
/// string not closed yet, while typing) is classed up to where it fails; the rest is a string when it starts with a
/// quote, plain otherwise.
#[must_use]
pub fn sql_classes(text: &str) -> Vec<(Range<usize>, SqlClass)> {
    let mut pieces = Vec::new();
    let lines = LineStarts::new(text);
    let (tokens, failed_at) =
        match Tokenizer::new(&GenericDialect {}, text).tokenize_with_location() {
            Ok(tokens) => (tokens, None),
            Err(e) => {
                let at = lines.byte(text, e.location);
                let tokens = Tokenizer::new(&GenericDialect {}, &text[..at])
                    .tokenize_with_location()
                    .unwrap_or_default();
                (tokens, Some(at))
            }
        };
    let mut done = 0;
    for token in tokens {
        let start = lines.byte(text, token.span.start).max(done);
        let end = lines.byte(text, token.span.end).max(start);
        if start > done {
            pieces.push((done..start, SqlClass::Plain));
        }
        if end > start {
            pieces.push((start..end, class_of(&token.token)));
        }
        done = end;
    }
    if let Some(at) = failed_at {
        let at = at.max(done);
        if at > done {
            pieces.push((done..at, SqlClass::Plain));
        }
        done = at;
    }
    if done < text.len() {
        let rest = &text[done..];
        let class = if failed_at.is_some() && rest.starts_with(['\'', '"']) {
            SqlClass::String
        } else {
            SqlClass::Plain
        };
        pieces.push((done..text.len(), class));
    }
    pieces
}

fn class_of(token: &Token) -> SqlClass {
    match token {
        Token::Word(word) if word.quote_style.is_none() && word.keyword != Keyword::NoKeyword => {
            SqlClass::Keyword
        }
        Token::Number(..) => SqlClass::Number,
        Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::NationalStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_)
        | Token::DollarQuotedString(_) => SqlClass::String,
        Token::Whitespace(
            Whitespace::SingleLineComment { .. } | Whitespace::MultiLineComment(_),
        ) => SqlClass::Comment,
        _ => SqlClass::Plain,
    }
}

/// Where each line of a text starts, to turn the tokenizer's lines and columns (of characters, from 1) into bytes.
struct LineStarts(Vec<usize>);

impl LineStarts {
    fn new(text: &str) -> LineStarts {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineStarts(starts)
    }

    fn byte(&self, text: &str, at: Location) -> usize {
        let Some(&line_start) = usize::try_from(at.line)
            .ok()
            .and_then(|line| line.checked_sub(1))
            .and_then(|line| self.0.get(line))
        else {
            return text.len();
        };
        let column = usize::try_from(at.column)
            .unwrap_or(usize::MAX)
            .saturating_sub(1);
        text[line_start..]
            .char_indices()
            .nth(column)
            .map_or(text.len(), |(i, _)| line_start + i)
    }
}

#[cfg(test)]
mod tests {
    use super::{SqlClass, sql_classes};

    fn classes(text: &str) -> Vec<(&str, SqlClass)> {
        let pieces = sql_classes(text);
        let mut covered = 0;
        for (range, _) in &pieces {
            assert_eq!(range.start, covered, "{text:?}: {pieces:?}");
            covered = range.end;
        }
        assert_eq!(covered, text.len(), "{text:?}: {pieces:?}");
        pieces
            .into_iter()
            .filter(|(range, class)| {
                *class != SqlClass::Plain || !text[range.clone()].trim().is_empty()
            })
            .map(|(range, class)| (&text[range], class))
            .collect()
    }

    #[test]
    fn keywords_strings_numbers_and_comments_are_told_apart() {
        use SqlClass::{Comment, Keyword, Number, Plain, String};
        assert_eq!(
            classes("select \"Ω name\", count(*) -- how many\nFROM t WHERE x > 1.5 AND s = 'é''s'"),
            vec![
                ("select", Keyword),
                ("\"Ω name\"", Plain),
                (",", Plain),
                ("count", Keyword),
                ("(", Plain),
                ("*", Plain),
                (")", Plain),
                ("-- how many\n", Comment),
                ("FROM", Keyword),
                ("t", Plain),
                ("WHERE", Keyword),
                ("x", Plain),
                (">", Plain),
                ("1.5", Number),
                ("AND", Keyword),
                ("s", Plain),
                ("=", Plain),
                ("'é''s'", String),
            ]
        );
    }

    #[test]
    fn sql_being_typed_is_coloured_up_to_where_it_stops() {
        use SqlClass::{Keyword, Number, Plain, String};
        assert_eq!(
            classes("SELECT 1, 'not closed\nyet"),
            vec![
                ("SELECT", Keyword),
                ("1", Number),
                (",", Plain),
                ("'not closed\nyet", String)
            ]
        );
        assert_eq!(classes(""), vec![]);
        assert_eq!(classes("  \n "), vec![]);
    }
}
