//! Documents, their fields and mutable attributes, and write operations.

use crate::error::{Error, Result};

/// A searchable field of a mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Field {
    /// The sender's name and address.
    From = 0,
    /// Recipients: To and Cc.
    To = 1,
    Subject = 2,
    Body = 3,
    /// Attachment file names.
    Attachment = 4,
}

impl Field {
    pub const ALL: [Field; 5] = [
        Field::From,
        Field::To,
        Field::Subject,
        Field::Body,
        Field::Attachment,
    ];

    pub fn from_u8(value: u8) -> Option<Field> {
        Field::ALL.get(usize::from(value)).copied()
    }

    /// The field a query names (`from:`, `to:`, `cc:`, `subject:`, `body:`,
    /// `attachment:` or `filename:`), case-insensitive.
    pub fn from_name(name: &str) -> Option<Field> {
        match name.to_ascii_lowercase().as_str() {
            "from" => Some(Field::From),
            "to" | "cc" => Some(Field::To),
            "subject" => Some(Field::Subject),
            "body" => Some(Field::Body),
            "attachment" | "filename" => Some(Field::Attachment),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Field::From => "from",
            Field::To => "to",
            Field::Subject => "subject",
            Field::Body => "body",
            Field::Attachment => "attachment",
        }
    }
}

/// Flag bit: the mail was read.
pub const FLAG_READ: u32 = 1;
/// Flag bit: the mail is starred.
pub const FLAG_STARRED: u32 = 2;

/// The mutable attributes of a mail. They are kept apart from the postings,
/// so marking a mail read or moving it rewrites no posting list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attrs {
    /// Unix seconds.
    pub date: i64,
    pub folder: u32,
    /// [`FLAG_READ`], [`FLAG_STARRED`] and any bits of the caller's own.
    pub flags: u32,
}

/// A mail to index. `id` is assigned by the caller and grows with arrival,
/// so newest first is descending id. Ids are per user and never reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    pub user: u32,
    pub id: u64,
    pub attrs: Attrs,
    /// Texts by field; a field may appear several times (several
    /// recipients, several attachments).
    pub fields: Vec<(Field, String)>,
}

/// One write, for [`crate::Index::write_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Add(Doc),
    /// Deleting an unknown or already deleted mail does nothing.
    Delete {
        user: u32,
        doc: u64,
    },
    /// Setting the attributes of an unknown or deleted mail does nothing.
    SetAttrs {
        user: u32,
        doc: u64,
        attrs: Attrs,
    },
}

/// Structured filters applied after the text query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filter {
    pub folder: Option<u32>,
    /// Inclusive lower bound on the date, unix seconds.
    pub date_from: Option<i64>,
    /// Exclusive upper bound on the date, unix seconds.
    pub date_to: Option<i64>,
    /// `Some(true)`: read mail only; `Some(false)`: unread only.
    pub read: Option<bool>,
    pub starred: Option<bool>,
}

impl Filter {
    pub fn matches(&self, attrs: &Attrs) -> bool {
        self.folder.is_none_or(|folder| attrs.folder == folder)
            && self.date_from.is_none_or(|from| attrs.date >= from)
            && self.date_to.is_none_or(|to| attrs.date < to)
            && self
                .read
                .is_none_or(|read| (attrs.flags & FLAG_READ != 0) == read)
            && self
                .starred
                .is_none_or(|starred| (attrs.flags & FLAG_STARRED != 0) == starred)
    }
}

/// What the index knows of a doc id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DocState {
    Live(Attrs),
    /// A tombstone: the mail was deleted; its postings are skipped by
    /// queries and dropped by merges.
    Dead,
}

pub(crate) fn check_doc(doc: &Doc) -> Result<()> {
    if doc.fields.len() > crate::constants::DOC_FIELDS_MAX {
        return Err(Error::InvalidArgument(format!(
            "document {} has {} fields, over the limit of {}",
            doc.id,
            doc.fields.len(),
            crate::constants::DOC_FIELDS_MAX
        )));
    }
    let bytes: usize = doc.fields.iter().map(|(_, text)| text.len()).sum();
    if bytes > crate::constants::DOC_TEXT_BYTES_MAX {
        return Err(Error::InvalidArgument(format!(
            "document {} has {bytes} bytes of text, over the limit of {}; index a prefix of the body",
            doc.id,
            crate::constants::DOC_TEXT_BYTES_MAX
        )));
    }
    Ok(())
}
