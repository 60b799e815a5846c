//! A component's imports, read from its binary before anything is compiled.
//!
//! Compiling a component costs from tens of milliseconds (a Rust projector) to 7–15
//! seconds and some 380 MB (an interpreter such as componentize-py's). A component that
//! imports something the sandbox does not provide is refused from its import section
//! alone, which takes microseconds: only the top-level sections are read, and nested
//! modules and components are skipped over without being parsed.

use wasmparser::{Chunk, ComponentTypeRef, Parser, Payload};

/// The names of a component's top-level imports that the host must provide, in the
/// order they appear, for example `wasi:cli/stderr@0.2.12` or
/// `refract:projector/sql@0.1.0`. Type imports are left out: they name types the
/// component uses and are satisfied by the component itself.
///
/// Fails with wasmparser's message (naming the byte offset) when the binary cannot be
/// read that far. The rest of the binary is validated later, by the compiler.
pub(crate) fn component_imports(wasm: &[u8]) -> Result<Vec<String>, String> {
    let mut parser = Parser::new(0);
    let mut data = wasm;
    let mut names = Vec::new();
    loop {
        let (payload, consumed) = match parser.parse(data, true) {
            Ok(Chunk::Parsed { payload, consumed }) => (payload, consumed),
            // With `eof = true` the parser never asks for more data.
            Ok(Chunk::NeedMoreData(_)) => return Err("the component is truncated".into()),
            Err(err) => return Err(err.to_string()),
        };
        data = &data[consumed..];
        match payload {
            Payload::ComponentImportSection(reader) => {
                for import in reader {
                    let import = import.map_err(|err| err.to_string())?;
                    // A type import (`projector-info` for an export's signature, as
                    // wit-component writes) needs nothing from the host.
                    if !matches!(import.ty, ComponentTypeRef::Type(_)) {
                        names.push(import.name.name.to_owned());
                    }
                }
            }
            // Nested modules and components are compiled later; their imports are
            // satisfied inside the component, not by the host. Skip their bytes.
            Payload::ModuleSection {
                unchecked_range, ..
            }
            | Payload::ComponentSection {
                unchecked_range, ..
            } => {
                let skip = unchecked_range.len();
                if skip > data.len() {
                    return Err(format!(
                        "a nested section at offset {} runs past the end of the component",
                        unchecked_range.start
                    ));
                }
                data = &data[skip..];
            }
            Payload::End(_) => return Ok(names),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_imports_are_listed_and_nested_ones_are_not() {
        let wasm = wat::parse_str(
            r#"(component
                (import "wasi:http/types@0.2.10" (instance))
                (type $t (record (field "a" u32)))
                (import "projector-info" (type (eq $t)))
                (import "refract:projector/sql@0.1.0" (instance))
                (core module (import "env" "nested" (func)))
                (component (import "nested:inner/x" (instance)))
            )"#,
        )
        .expect("valid text");
        assert_eq!(
            component_imports(&wasm).expect("readable"),
            ["wasi:http/types@0.2.10", "refract:projector/sql@0.1.0"]
        );
    }

    #[test]
    fn a_truncated_component_is_an_error() {
        let wasm = wat::parse_str(r#"(component (import "a:b/c" (instance)))"#).expect("valid");
        let cut = &wasm[..wasm.len() - 3];
        assert!(component_imports(cut).is_err());
    }
}
