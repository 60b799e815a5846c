//! Integration tests. (Being built.)

mod support;
