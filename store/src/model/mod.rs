//! The domain model: schemas, the canonical resource document, validation of client input
//! against attribute characteristics, the searchable-value index, and projection.

mod document;
mod names;
mod projection;
mod schema;

pub use document::{
    GroupView, IndexRow, MAX_INDEXED_BYTES, MemberRef, MemberView, Normalized, StoredResource,
    check_required, display_of, index_key, index_rows, index_text, normalize_attribute,
    normalize_datetime, normalize_resource, now_timestamp, render,
};
pub use names::{TextComparison, check_comparison_text, comparison_text, name_key, normalize_name};
pub use projection::Projection;
pub use schema::*;
