//! The tokenizer shared by indexing and queries.
//!
//! Text is split on characters that are not letters or digits (Unicode's
//! alphabetic and numeric classes), lowercased with Unicode's rules, and
//! common Latin accents are folded to ASCII (`é` -> `e`, `ß` -> `ss`), so
//! `Réunion` and `reunion` match. Every word takes one position, counted per
//! field, for phrase queries. An email address (`local@domain`, found in
//! chunks split on whitespace and `<>,;"'()[]`) is indexed whole, lowercased,
//! at the position of its first word, as well as word by word.

use crate::constants::{ADDRESS_BYTES_MAX, TOKEN_BYTES_MAX};

/// Folds a lowercase Latin letter with a diacritic to ASCII.
fn fold(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'æ' => "ae",
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => "c",
        'ď' | 'đ' | 'ð' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
        'ĥ' | 'ħ' => "h",
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => "i",
        'ĵ' => "j",
        'ķ' => "k",
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => "l",
        'ñ' | 'ń' | 'ņ' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => "o",
        'œ' => "oe",
        'ŕ' | 'ŗ' | 'ř' => "r",
        'ś' | 'ŝ' | 'ş' | 'š' => "s",
        'ß' => "ss",
        'ţ' | 'ť' | 'ŧ' => "t",
        'þ' => "th",
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
        'ŵ' => "w",
        'ý' | 'ÿ' | 'ŷ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        _ => return None,
    })
}

/// Appends the normalized form of a letter or digit.
#[inline]
fn push_normalized(c: char, out: &mut String) {
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
        return;
    }
    for lower in c.to_lowercase() {
        match fold(lower) {
            Some(ascii) => out.push_str(ascii),
            None => out.push(lower),
        }
    }
}

#[inline]
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || (!c.is_ascii() && c.is_alphanumeric())
}

fn is_chunk_separator(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '<' | '>' | ',' | ';' | '"' | '\'' | '(' | ')' | '[' | ']'
        )
}

/// The whole-address token of a chunk such as `Alice.B@Example.com.`:
/// lowercased, surrounding punctuation trimmed; `None` unless it has exactly
/// one `@` with letters or digits on both sides.
pub fn address_token(chunk: &str) -> Option<String> {
    let trimmed = chunk.trim_matches(|c: char| !is_word_char(c));
    let (local, domain) = trimmed.split_once('@')?;
    if local.is_empty()
        || domain.is_empty()
        || domain.contains('@')
        || trimmed.len() > ADDRESS_BYTES_MAX
        || !local.chars().any(is_word_char)
        || !domain.chars().any(is_word_char)
    {
        return None;
    }
    Some(trimmed.to_lowercase())
}

/// Calls `emit(token, position)` for every token of `text`, positions
/// starting at `first_position`; returns the position after the last word.
pub fn tokenize(text: &str, first_position: u32, emit: impl FnMut(&str, u32)) -> u32 {
    if text.is_ascii() {
        tokenize_ascii(text.as_bytes(), first_position, emit)
    } else {
        tokenize_chars(text, first_position, emit)
    }
}

/// Whitespace as `char::is_whitespace` has it, for ASCII.
#[inline]
fn is_ascii_chunk_separator(b: u8) -> bool {
    matches!(
        b,
        b'\t'
            | b'\n'
            | 0x0b
            | 0x0c
            | b'\r'
            | b' '
            | b'<'
            | b'>'
            | b','
            | b';'
            | b'"'
            | b'\''
            | b'('
            | b')'
            | b'['
            | b']'
    )
}

/// [`tokenize_chars`] for ASCII text, a byte at a time: the same tokens and
/// positions (a test checks the two agree).
fn tokenize_ascii(text: &[u8], first_position: u32, mut emit: impl FnMut(&str, u32)) -> u32 {
    let mut position = first_position;
    let mut word = String::new();
    let mut i = 0;
    while i < text.len() {
        if is_ascii_chunk_separator(text[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < text.len() && !is_ascii_chunk_separator(text[i]) {
            i += 1;
        }
        let chunk = &text[start..i];
        if chunk.contains(&b'@') {
            // ASCII bytes are one char each, so the chunk is a str.
            if let Some(address) = std::str::from_utf8(chunk).ok().and_then(address_token) {
                emit(&address, position);
            }
        }
        let mut j = 0;
        while j < chunk.len() {
            if !chunk[j].is_ascii_alphanumeric() {
                j += 1;
                continue;
            }
            let word_start = j;
            while j < chunk.len() && chunk[j].is_ascii_alphanumeric() {
                j += 1;
            }
            let bytes = &chunk[word_start..j];
            if bytes.len() <= TOKEN_BYTES_MAX {
                // ASCII letters and digits are one char each, so both
                // conversions always succeed.
                if bytes.iter().any(u8::is_ascii_uppercase) {
                    word.clear();
                    word.extend(bytes.iter().map(|b| char::from(b.to_ascii_lowercase())));
                    emit(&word, position);
                } else if let Ok(token) = std::str::from_utf8(bytes) {
                    emit(token, position);
                }
            }
            position += 1;
        }
    }
    position
}

/// The tokenizer for any text, a char at a time.
fn tokenize_chars(text: &str, first_position: u32, mut emit: impl FnMut(&str, u32)) -> u32 {
    let mut word = String::new();
    let mut position = first_position;
    let flush = |word: &mut String, position: &mut u32, emit: &mut dyn FnMut(&str, u32)| {
        if !word.is_empty() {
            if word.len() <= TOKEN_BYTES_MAX {
                emit(word, *position);
            }
            *position += 1;
            word.clear();
        }
    };
    for chunk in text.split(is_chunk_separator) {
        if chunk.is_empty() {
            continue;
        }
        if chunk.contains('@') {
            if let Some(address) = address_token(chunk) {
                emit(&address, position);
            }
        }
        for c in chunk.chars() {
            if is_word_char(c) {
                push_normalized(c, &mut word);
            } else {
                flush(&mut word, &mut position, &mut emit);
            }
        }
        flush(&mut word, &mut position, &mut emit);
    }
    position
}

/// The tokens of a query word: its words in order, or the whole address
/// when it contains `@`.
pub fn query_words(word: &str) -> Vec<String> {
    if word.contains('@') {
        if let Some(address) = address_token(word) {
            return vec![address];
        }
    }
    let mut out = Vec::new();
    tokenize(word, 0, |token, _| {
        if !token.contains('@') {
            out.push(token.to_string());
        }
    });
    out
}

/// Normalizes a prefix the way tokens are normalized (lowercase, folded),
/// keeping `@` and `.` when the prefix is an address.
pub fn normalize_prefix(prefix: &str) -> String {
    if prefix.contains('@') {
        return prefix.to_lowercase();
    }
    let mut out = String::new();
    for c in prefix.chars() {
        if is_word_char(c) {
            push_normalized(c, &mut out);
        }
    }
    out
}

/// The tokens of a document's fields: `(field index, token, position)`.
/// Positions count per field; each further text of a field starts one
/// position after the previous text's end, so phrases never span two
/// recipients or two attachments.
pub fn doc_tokens(fields: &[(crate::Field, String)]) -> Vec<(crate::Field, String, u32)> {
    let mut next = [0u32; 5];
    let mut out = Vec::new();
    for (field, text) in fields {
        let start = next[*field as usize];
        let end = tokenize(text, start, |token, position| {
            out.push((*field, token.to_string(), position));
        });
        next[*field as usize] = end + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        tokenize(text, 0, |t, p| out.push((t.to_string(), p)));
        out
    }

    #[test]
    fn words_lowercase_and_fold() {
        let got = tokens("Réunion: Straße, ÉCOLE déjà-vu 42x");
        let words: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(words, ["reunion", "strasse", "ecole", "deja", "vu", "42x"]);
        assert_eq!(got[4].1, 4);
        let cjk = tokens("東京 Москва");
        assert_eq!(cjk[0].0, "東京");
        assert_eq!(cjk[1].0, "москва");
    }

    #[test]
    fn addresses_whole_and_by_parts() {
        let got = tokens("From: Alice <Alice.Smith@Example.COM>, bob@x.org.");
        assert_eq!(
            got,
            [
                ("from", 0),
                ("alice", 1),
                ("alice.smith@example.com", 2),
                ("alice", 2),
                ("smith", 3),
                ("example", 4),
                ("com", 5),
                ("bob@x.org", 6),
                ("bob", 6),
                ("x", 7),
                ("org", 8),
            ]
            .map(|(t, p)| (t.to_string(), p))
        );
        assert_eq!(address_token("@foo"), None);
        assert_eq!(address_token("a@@b"), None);
    }

    #[test]
    fn ascii_path_agrees_with_the_char_path() {
        let alphabet: Vec<char> = "aZ9 \t\n\u{b}\u{c}\r@.<>,;\"'()[]-_:é".chars().collect();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 40) as usize;
            let mut text = String::new();
            let mut s = state;
            for _ in 0..len {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // Leave out the one non-ASCII letter so both paths run.
                text.push(alphabet[((s >> 33) as usize) % (alphabet.len() - 1)]);
            }
            if state % 7 == 0 {
                text.push_str(&"y".repeat(TOKEN_BYTES_MAX + (state % 3) as usize));
            }
            let mut fast = Vec::new();
            let fast_end = tokenize_ascii(text.as_bytes(), 3, |t, p| fast.push((t.to_string(), p)));
            let mut slow = Vec::new();
            let slow_end = tokenize_chars(&text, 3, |t, p| slow.push((t.to_string(), p)));
            assert_eq!((fast, fast_end), (slow, slow_end), "{text:?}");
        }
    }

    #[test]
    fn long_tokens_skipped_but_counted() {
        let long = "x".repeat(TOKEN_BYTES_MAX + 1);
        let got = tokens(&format!("a {long} b"));
        assert_eq!(got, [("a".to_string(), 0), ("b".to_string(), 2)]);
    }

    #[test]
    fn query_word_forms() {
        assert_eq!(query_words("E-Mail"), ["e", "mail"]);
        assert_eq!(query_words("Bob@X.org"), ["bob@x.org"]);
        assert_eq!(normalize_prefix("Ré"), "re");
        assert_eq!(normalize_prefix("Bob@X"), "bob@x");
    }

    #[test]
    fn doc_tokens_gap_between_texts() {
        let fields = vec![
            (crate::Field::To, "a b".to_string()),
            (crate::Field::To, "c".to_string()),
            (crate::Field::Body, "z".to_string()),
        ];
        let got = doc_tokens(&fields);
        assert_eq!(got[2], (crate::Field::To, "c".to_string(), 3));
        assert_eq!(got[3], (crate::Field::Body, "z".to_string(), 0));
    }
}
