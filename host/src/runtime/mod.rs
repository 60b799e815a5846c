//! The WebAssembly projector runtime and its sandbox. (Being built.)
