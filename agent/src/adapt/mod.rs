//! OS adaptation (issue 5): what `ferry adapt` changes in a migrated system.
pub mod rewrite;
