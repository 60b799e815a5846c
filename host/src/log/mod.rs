//! The embedded SQLite event log. (Being built.)
