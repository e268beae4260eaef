//! placeholder; see main.rs
