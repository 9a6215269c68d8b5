//! Wasmtime's C API as one static library (libwasmtime_rusm.a): re-exports
//! every `extern "C"` item of `wasmtime-c-api-impl` so the staticlib keeps
//! them. The headers come from that crate's build script (see
//! scripts/wasmtime-build). A thin glue layer for Wasmtime APIs without a C
//! entry point in this version goes here too, next to this line.

pub use wasmtime_c_api::*;
