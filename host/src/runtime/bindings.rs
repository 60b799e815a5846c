//! The one `bindgen!` site: Rust types for the `refract:projector` WIT world.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "projector",
});
