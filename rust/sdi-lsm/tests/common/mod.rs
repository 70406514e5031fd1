//! Helpers shared by the integration tests: temporary directories and a
//! brute-force model of the index.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use sdi_lsm::tokenize::doc_tokens;
use sdi_lsm::{Attrs, Doc, Field, Filter, Query};

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sdi-lsm-it-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Clone, Debug)]
pub struct ModelDoc {
    pub attrs: Attrs,
    pub tokens: Vec<(Field, String, u32)>,
    pub live: bool,
}

/// Every mail ever added, by (user, id), with a brute-force matcher.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub docs: BTreeMap<(u32, u64), ModelDoc>,
}

fn field_ok(want: Option<Field>, got: Field) -> bool {
    want.is_none_or(|w| w == got)
}

impl Model {
    /// Mirrors `Index::add`: false when the id is taken.
    pub fn add(&mut self, doc: &Doc) -> bool {
        if self.docs.contains_key(&(doc.user, doc.id)) {
            return false;
        }
        self.docs.insert(
            (doc.user, doc.id),
            ModelDoc {
                attrs: doc.attrs,
                tokens: doc_tokens(&doc.fields),
                live: true,
            },
        );
        true
    }

    pub fn delete(&mut self, user: u32, id: u64) {
        if let Some(doc) = self.docs.get_mut(&(user, id)) {
            doc.live = false;
        }
    }

    pub fn set_attrs(&mut self, user: u32, id: u64, attrs: Attrs) {
        if let Some(doc) = self.docs.get_mut(&(user, id)) {
            if doc.live {
                doc.attrs = attrs;
            }
        }
    }

    pub fn is_dead(&self, user: u32, id: u64) -> bool {
        self.docs.get(&(user, id)).is_some_and(|d| !d.live)
    }

    pub fn live_count(&self) -> u64 {
        self.docs.values().filter(|d| d.live).count() as u64
    }

    pub fn matches(doc: &ModelDoc, query: &Query) -> bool {
        match query {
            Query::All => true,
            Query::Term { field, term } => doc
                .tokens
                .iter()
                .any(|(f, t, _)| field_ok(*field, *f) && t == term),
            Query::Prefix { field, prefix } => doc
                .tokens
                .iter()
                .any(|(f, t, _)| field_ok(*field, *f) && t.starts_with(prefix.as_str())),
            Query::Phrase { field, terms } => doc.tokens.iter().any(|(f, t, p)| {
                field_ok(*field, *f)
                    && terms.first() == Some(t)
                    && terms.iter().enumerate().skip(1).all(|(i, want)| {
                        doc.tokens
                            .iter()
                            .any(|(f2, t2, p2)| f2 == f && t2 == want && *p2 == p + i as u32)
                    })
            }),
            Query::And(items) => items.iter().all(|q| Self::matches(doc, q)),
            Query::Or(items) => items.iter().any(|q| Self::matches(doc, q)),
            Query::Not(inner) => !Self::matches(doc, inner),
        }
    }

    pub fn search(
        &self,
        user: u32,
        query: &Query,
        filter: &Filter,
        limit: usize,
        before: Option<u64>,
    ) -> Vec<u64> {
        self.docs
            .range((user, 0)..=(user, u64::MAX))
            .rev()
            .filter(|(&(_, id), doc)| {
                doc.live
                    && before.is_none_or(|b| id < b)
                    && filter.matches(&doc.attrs)
                    && Self::matches(doc, query)
            })
            .map(|(&(_, id), _)| id)
            .take(limit)
            .collect()
    }
}

pub const WORDS: &[&str] = &[
    "alpha", "alps", "beta", "bet", "gamma", "delta", "deltas", "epsilon", "zeta", "eta",
    "Réunion", "reunion", "meeting", "budget", "invoice", "q3", "e-mail",
];

pub const NAMES: &[&str] = &["alice", "bob", "carol", "dave"];

pub fn make_doc(
    user: u32,
    id: u64,
    attrs: Attrs,
    from: usize,
    subject: &[usize],
    body: &[usize],
    attachment: bool,
) -> Doc {
    let words = |picks: &[usize]| {
        picks
            .iter()
            .map(|&i| WORDS[i % WORDS.len()])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let name = NAMES[from % NAMES.len()];
    let mut fields = vec![
        (Field::From, format!("{name} <{name}@example.com>")),
        (
            Field::To,
            format!("{}@example.org", NAMES[(from + 1) % NAMES.len()]),
        ),
        (Field::Subject, words(subject)),
        (Field::Body, words(body)),
    ];
    if attachment {
        fields.push((
            Field::Attachment,
            format!("{}.pdf", words(&subject[..subject.len().min(1)])),
        ));
    }
    Doc {
        user,
        id,
        attrs,
        fields,
    }
}
