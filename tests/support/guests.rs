//! Builds the guest components from source for the tests. (Being built.)
