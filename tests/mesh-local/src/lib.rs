//! Placeholder: see README.md
