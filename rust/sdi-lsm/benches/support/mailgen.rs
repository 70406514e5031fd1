//! Generated mail for the benchmark (and its smoke test): words drawn from a
//! synthetic vocabulary with a Zipf-like skew, addresses from a pool of
//! names, dates that grow with the id.

#![allow(dead_code)]

use sdi_lsm::{Attrs, Doc, Field, FLAG_READ};

/// xorshift64*, deterministic per seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Skewed towards small indexes: roughly Zipf over `n`.
    pub fn skewed(&mut self, n: usize) -> usize {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64).powf(u) as usize).saturating_sub(1).min(n - 1)
    }
}

pub struct MailGen {
    rng: Rng,
    words: Vec<String>,
    names: Vec<String>,
    pub users: u32,
    next_id: u64,
}

impl MailGen {
    pub fn new(seed: u64, vocabulary: usize, users: u32) -> MailGen {
        let syllables = [
            "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "de", "fo", "gi",
            "ha", "jo", "bu", "ce", "wy", "xe",
        ];
        let mut rng = Rng::new(seed);
        let words = (0..vocabulary)
            .map(|i| {
                let mut word = String::new();
                let mut n = i;
                loop {
                    word.push_str(syllables[n % syllables.len()]);
                    n /= syllables.len();
                    if n == 0 {
                        break;
                    }
                }
                if rng.below(4) == 0 {
                    word.push_str(syllables[rng.below(syllables.len())]);
                }
                word
            })
            .collect();
        let names = (0..500).map(|i| format!("user{i}")).collect();
        MailGen {
            rng,
            words,
            names,
            users,
            next_id: 1,
        }
    }

    fn text(&mut self, words: usize) -> String {
        let mut out = String::with_capacity(words * 7);
        for i in 0..words {
            if i > 0 {
                out.push(' ');
            }
            let w = self.rng.skewed(self.words.len());
            out.push_str(&self.words[w]);
        }
        out
    }

    pub fn word(&mut self) -> String {
        let w = self.rng.skewed(self.words.len());
        self.words[w].clone()
    }

    pub fn next_doc(&mut self) -> Doc {
        let id = self.next_id;
        self.next_id += 1;
        let user = self.rng.below(self.users as usize) as u32;
        let from = self.rng.below(self.names.len());
        let to = self.rng.below(self.names.len());
        let subject_words = 3 + self.rng.below(6);
        let body_words = 60 + self.rng.below(120);
        let mut fields = vec![
            (
                Field::From,
                format!(
                    "{} <{}@mail{}.example>",
                    self.names[from],
                    self.names[from],
                    from % 7
                ),
            ),
            (
                Field::To,
                format!("{}@mail{}.example", self.names[to], to % 7),
            ),
            (Field::Subject, self.text(subject_words)),
            (Field::Body, self.text(body_words)),
        ];
        if self.rng.below(5) == 0 {
            let name = self.text(2).replace(' ', "_");
            fields.push((Field::Attachment, format!("{name}.pdf")));
        }
        Doc {
            user,
            id,
            attrs: Attrs {
                date: 1_700_000_000 + id as i64 * 30,
                folder: self.rng.below(4) as u32,
                flags: if self.rng.below(3) == 0 { 0 } else { FLAG_READ },
            },
            fields,
        }
    }
}
