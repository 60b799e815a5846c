//! Loading: from `.wasm` bytes to a validated, compiled, pre-linked projector version.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Linker;

use super::bindings::{ContractVersion, ProjectorPre};
use super::cache::CompileCache;
use super::engine::{self, TickClock, Ticker, Watchdog};
use super::error::RuntimeError;
use super::host_log::LogBudget;
use super::instance::{self, ProjectorInfo};
use super::limits::{InvalidLimit, SandboxLimits, format_bytes};
use super::refusals::Refusals;
use super::sql::{DbOptions, SandboxedDb};
use super::store::StoreState;
use super::{compile, host_log, host_sql, imports, wasi, wasi_http};
use crate::reactors::{EmitRate, ReactorInfo};

/// Hex digits of the sha256 used as a projector's version: 32 bits, enough to tell a
/// deployment's versions apart, short enough for file names and messages.
pub const VERSION_HEX_LEN: usize = 8;

/// How the runtime is set up.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Where compiled components are cached. `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// The sandbox limits for every projector.
    pub limits: SandboxLimits,
}

/// The WebAssembly runtime: the engine, the epoch ticker, the compile cache and the
/// limits. Cheap to clone; the ticker thread stops when the last clone (and every
/// projector loaded from it) is dropped.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<StoreState>,
    pub(crate) limits: Arc<SandboxLimits>,
    cache: Option<CompileCache>,
    refusals: Refusals,
    ticker: Ticker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("limits", &self.inner.limits)
            .field("cache", &self.inner.cache)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the engine, starts the epoch ticker and opens the compile cache.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let RuntimeConfig { cache_dir, limits } = config;
        limits.validate()?;
        let engine_error = |message: String| RuntimeError::Engine { message };
        let engine = engine::build(&limits).map_err(|err| engine_error(format!("{err:#}")))?;
        let linker = build_linker(&engine).map_err(|err| engine_error(format!("{err:#}")))?;
        let cache = cache_dir
            .map(|dir| {
                CompileCache::open(&dir, &engine)
                    .map_err(|source| RuntimeError::Cache { path: dir, source })
            })
            .transpose()?;
        let ticker = Ticker::start(&engine)
            .map_err(|err| engine_error(format!("cannot start the epoch thread: {err}")))?;
        let refusals = Refusals::new(cache.as_ref().map(|cache| cache.dir().to_owned()));
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                limits: Arc::new(limits),
                cache,
                refusals,
                ticker,
            }),
        })
    }

    /// The sandbox limits in force.
    pub fn limits(&self) -> &SandboxLimits {
        &self.inner.limits
    }

    /// Validates, checks imports (before compiling), compiles within the compile limits
    /// (or loads from the cache), checks exports, pre-links a component, and starts it
    /// once on a scratch database to read its metadata. The version is the first
    /// [`VERSION_HEX_LEN`] hex digits of the sha256 of `wasm`.
    ///
    /// A component refused for what its bytes are (an import outside the sandbox, a
    /// compile error or a compile over its budget, the wrong world) is remembered by
    /// content hash and refused again at once.
    pub fn load(&self, wasm: &[u8]) -> Result<LoadedProjector, RuntimeError> {
        let started = Instant::now();
        check_header(wasm)?;
        let limits = &self.inner.limits;
        if wasm.len() > limits.max_component_bytes {
            return Err(RuntimeError::TooLarge {
                size: wasm.len(),
                limit: format_bytes(limits.max_component_bytes),
            });
        }
        let sha256 = hex::encode(Sha256::digest(wasm));
        if let Some(refused) = self.inner.refusals.get(&sha256, limits) {
            return Err(refused);
        }
        self.examine(wasm, sha256.clone(), started)
            .inspect_err(|error| self.inner.refusals.remember(&sha256, error, limits))
    }

    /// [`Runtime::load`] past the checks that need no examination.
    fn examine(
        &self,
        wasm: &[u8],
        sha256: String,
        started: Instant,
    ) -> Result<LoadedProjector, RuntimeError> {
        let version = sha256[..VERSION_HEX_LEN].to_owned();
        let engine = &self.inner.engine;
        // Imports first, from the binary: a refusal costs no compile.
        let imports = imports::component_imports(wasm)
            .map_err(|message| RuntimeError::Invalid { message })?;
        for name in &imports {
            if let Some(message) = wasi::refuse_import(name) {
                return Err(RuntimeError::UnsupportedImport {
                    import: name.clone(),
                    message,
                });
            }
        }
        let contract = contract_of_imports(&imports)?;

        let cached = self
            .inner
            .cache
            .as_ref()
            .and_then(|cache| cache.get(engine, &sha256));
        let from_cache = cached.is_some();
        let component = match cached {
            Some(component) => component,
            None => compile::compile(engine, wasm, &self.inner.limits)?,
        };

        let instance_pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|err| RuntimeError::Link {
                message: format!("{err:#}"),
            })?;
        let component_type = component.component_type();
        let exports: Vec<&str> = component_type
            .exports(engine)
            .map(|(name, _)| name)
            .collect();
        let missing: Vec<&str> = WORLD_EXPORTS
            .iter()
            .copied()
            .filter(|name| !exports.contains(name))
            .collect();
        if !missing.is_empty() {
            let list = |names: &[&str]| {
                names
                    .iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(RuntimeError::WrongWorld {
                message: format!(
                    "it lacks {}; it exports {}",
                    list(&missing),
                    if exports.is_empty() {
                        "nothing".to_owned()
                    } else {
                        list(&exports)
                    }
                ),
            });
        }
        let is_reactor = exports.contains(&crate::reactors::REACTOR_EXPORT);
        if !is_reactor
            && let Some(name) = imports
                .iter()
                .find(|name| crate::reactors::REACTOR_INTERFACES.contains(&name.as_str()))
        {
            return Err(RuntimeError::WrongWorld {
                message: format!(
                    "it imports `{name}`, which only a reactor may, but does not export `{}`",
                    crate::reactors::REACTOR_EXPORT
                ),
            });
        }
        let pre = pre_link(contract, is_reactor, instance_pre)?;

        // Start it once on a scratch database: the instance's start-up code and
        // `metadata` run now, and a projector with a bad name is refused at load time.
        let scratch = SandboxedDb::open(
            Path::new(":memory:"),
            DbOptions::live(),
            &self.inner.limits,
            self.clock().clone(),
            self.watchdog(),
        )
        .map_err(|source| RuntimeError::OpenDb {
            path: PathBuf::from(":memory:"),
            source,
        })?;
        let version: Arc<str> = Arc::from(version);
        let log_budget = Arc::new(LogBudget::new(&self.inner.limits));
        let emit_rate = Arc::new(EmitRate::new(&self.inner.limits));
        let instance = instance::start(
            self,
            &pre,
            &version,
            &self.inner.limits,
            &log_budget,
            is_reactor.then_some(&emit_rate),
            scratch,
        )?;
        let (info, reactor) = (instance.info, instance.reactor);

        if !from_cache && let Some(cache) = &self.inner.cache {
            // A cache that cannot be written costs only speed; the projector still loads.
            if let Err(err) = cache.put(&sha256, &component) {
                tracing::warn!(
                    path = %cache.path(&sha256).display(),
                    "cannot cache the compiled component: {err}"
                );
            }
        }
        Ok(LoadedProjector {
            inner: Arc::new(LoadedInner {
                runtime: self.clone(),
                pre,
                sha256,
                version,
                info,
                reactor,
                from_cache,
                load_time: started.elapsed(),
            }),
            limits: Arc::clone(&self.inner.limits),
            log_budget,
            emit_rate,
        })
    }

    /// Cancels every call into a projector of this runtime, those in progress and
    /// those to come: each ends within a tick, its batch rolled back, with
    /// [`ProjectorError::Cancelled`](super::ProjectorError::Cancelled). For shutting
    /// down: it cannot be undone.
    pub fn cancel_calls(&self) {
        self.inner.ticker.watchdog().cancel_all();
    }

    pub(crate) fn inner(&self) -> &RuntimeInner {
        &self.inner
    }

    pub(crate) fn clock(&self) -> &TickClock {
        self.inner.ticker.clock()
    }

    pub(crate) fn watchdog(&self) -> &Watchdog {
        self.inner.ticker.watchdog()
    }
}

/// The host's imports: WASI and `wasi:http` (denied by default) and the contract's `sql`
/// and `log`.
fn build_linker(engine: &Engine) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    wasi::add_to_linker(&mut linker)?;
    wasi_http::add_to_linker(&mut linker)?;
    // `types` holds only types; a component that imports it needs the instance to exist.
    for version in ContractVersion::ALL {
        linker.instance(&format!("refract:projector/types@{}", version.semver()))?;
    }
    host_sql::add_to_linker(&mut linker)?;
    host_log::add_to_linker(&mut linker)?;
    crate::reactors::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// The one contract version a component's `refract:projector` imports name, `None` if it
/// imports none of them (its exports decide then); a component naming two versions is
/// refused, naming an import of each.
fn contract_of_imports(imports: &[String]) -> Result<Option<ContractVersion>, RuntimeError> {
    let mut found: Option<(ContractVersion, &str)> = None;
    for name in imports {
        let Some(version) = ContractVersion::of_import(name) else {
            continue;
        };
        match found {
            None => found = Some((version, name)),
            Some((first, first_name)) if first != version => {
                return Err(RuntimeError::WrongWorld {
                    message: format!(
                        "it mixes contract versions: it imports `{first_name}` ({first}) and \
                         `{name}` ({version}). A component implements one version: rebuild \
                         it against one contract (refract-sdk targets 0.2.0; refract-sdk-0-1, \
                         its `contract-0-1` feature, targets 0.1.0)"
                    ),
                });
            }
            Some(_) => {}
        }
    }
    Ok(found.map(|(version, _)| version))
}

/// Pre-links a component as the contract version its imports name (or, if they name
/// none, the version its exports fit, newest first), checking its exports against that
/// version's world.
fn pre_link(
    contract: Option<ContractVersion>,
    is_reactor: bool,
    instance_pre: wasmtime::component::InstancePre<StoreState>,
) -> Result<ProjectorPre, RuntimeError> {
    let wrong_world = |err: wasmtime::Error| RuntimeError::WrongWorld {
        message: format!("{err:#}"),
    };
    if is_reactor && contract == Some(ContractVersion::V0_2) {
        return Err(RuntimeError::WrongWorld {
            message: format!(
                "it exports `{}` but imports {}: a reactor implements refract:reactor@0.1.0, \
                 which includes refract:projector@0.1.0. Build it with refract-reactor-sdk",
                crate::reactors::REACTOR_EXPORT,
                ContractVersion::V0_2
            ),
        });
    }
    match contract {
        Some(version) => ProjectorPre::new(version, instance_pre.clone()).map_err(|err| {
            // Name the mix when the exports are another version's.
            let other = ContractVersion::ALL.into_iter().find(|&other| {
                other != version && ProjectorPre::new(other, instance_pre.clone()).is_ok()
            });
            match other {
                Some(other) => RuntimeError::WrongWorld {
                    message: format!(
                        "it mixes contract versions: its imports are {version}'s but its \
                         exports are {other}'s. A component implements one version: rebuild \
                         it against one contract"
                    ),
                },
                None => wrong_world(err),
            }
        }),
        // A reactor's world includes projector 0.1.0 only: one that imports no projector
        // interface is still held to it, so it can never be read without event ids.
        None if is_reactor => {
            ProjectorPre::new(ContractVersion::V0_1, instance_pre).map_err(wrong_world)
        }
        None => ProjectorPre::new(ContractVersion::V0_2, instance_pre.clone())
            .or_else(|_| ProjectorPre::new(ContractVersion::V0_1, instance_pre))
            .map_err(wrong_world),
    }
}

/// The functions the `projector` world exports.
/// The package id of the reactor contract (`wit/reactor/`), the one version the host
/// implements.
const REACTOR_CONTRACT: &str = "refract:reactor@0.1.0";

const WORLD_EXPORTS: &[&str] = &["metadata", "init", "handle"];

/// The WebAssembly binary magic, `\0asm`.
const WASM_MAGIC: &[u8; 4] = b"\0asm";
/// Version and layer of a core module (version 1, layer 0).
const CORE_MODULE_HEADER: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
/// Version and layer of a component (version 0xd, layer 1).
const COMPONENT_HEADER: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];

/// Refuses, with a clear reason, anything that is not a component binary.
fn check_header(wasm: &[u8]) -> Result<(), RuntimeError> {
    let not_wasm = |reason: String| Err(RuntimeError::NotWasm { reason });
    if wasm.is_empty() {
        return not_wasm("the file is empty".into());
    }
    if wasm.len() < 8 || &wasm[..4] != WASM_MAGIC {
        let hint = if wasm.starts_with(b"(") || wasm.starts_with(b";;") {
            " (it looks like WebAssembly text; compile it to a binary component)"
        } else {
            ""
        };
        return not_wasm(format!(
            "it does not start with the WebAssembly magic bytes `\\0asm`{hint}"
        ));
    }
    match <[u8; 4]>::try_from(&wasm[4..8]) {
        Ok(CORE_MODULE_HEADER) => Err(RuntimeError::CoreModule),
        Ok(COMPONENT_HEADER) => Ok(()),
        _ => not_wasm(format!(
            "unknown WebAssembly version/layer {:02x?} (a component has {COMPONENT_HEADER:02x?})",
            &wasm[4..8]
        )),
    }
}

/// A validated, compiled and pre-linked projector version, ready to instantiate. Cheap to
/// clone.
#[derive(Clone)]
pub struct LoadedProjector {
    pub(crate) inner: Arc<LoadedInner>,
    /// The sandbox limits its instances run under: the runtime's, unless
    /// [`LoadedProjector::with_limits`] gave it its own.
    pub(crate) limits: Arc<SandboxLimits>,
    /// The version's log rate, over all its instances (at `limits`' rates).
    pub(crate) log_budget: Arc<LogBudget>,
    /// A reactor version's emit rate, over all its instances.
    pub(crate) emit_rate: Arc<EmitRate>,
}

pub(crate) struct LoadedInner {
    pub(crate) runtime: Runtime,
    pub(crate) pre: ProjectorPre,
    sha256: String,
    pub(crate) version: Arc<str>,
    pub(crate) info: ProjectorInfo,
    /// What a reactor says about its effects; `None` for a projector.
    pub(crate) reactor: Option<ReactorInfo>,
    from_cache: bool,
    load_time: Duration,
}

impl std::fmt::Debug for LoadedProjector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedProjector")
            .field("name", &self.inner.info.name)
            .field("version", &self.version())
            .field("sha256", &self.sha256())
            .field("from_cache", &self.from_cache())
            .finish_non_exhaustive()
    }
}

impl LoadedProjector {
    /// The version: a short hex prefix of the component's sha256.
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    /// The contract the component implements, as a WIT package id: `refract:projector@0.1.0`,
    /// `refract:projector@0.2.0`, or `refract:reactor@0.1.0` for a reactor.
    pub fn contract(&self) -> String {
        if self.inner.reactor.is_some() {
            REACTOR_CONTRACT.to_owned()
        } else {
            self.inner.pre.version().to_string()
        }
    }

    /// The full sha256 of the component, in hex.
    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }

    /// Whether the compiled code came from the cache rather than from Cranelift.
    pub fn from_cache(&self) -> bool {
        self.inner.from_cache
    }

    /// How long [`Runtime::load`] took: compiling, or reading the cache.
    pub fn load_time(&self) -> Duration {
        self.inner.load_time
    }

    /// What the component says about its effects if it is a reactor (it exports
    /// `reactor-info`), or `None` for a projector.
    pub fn reactor(&self) -> Option<&ReactorInfo> {
        self.inner.reactor.as_ref()
    }

    /// The runtime this projector was loaded by.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// Log lines this version wrote that the host dropped, over every instance: past
    /// `limits.max_log_lines_per_call` in one call, or past the per-second rates.
    pub fn log_lines_dropped(&self) -> u64 {
        self.log_budget.lines_dropped()
    }

    /// The sandbox limits its instances run under.
    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    /// The same compiled projector, whose instances run under `limits` instead (a
    /// projector's own `[projectors.<name>.limits]`), with a log budget of its own at
    /// those limits' rates. The limits that belong to the whole engine
    /// ([`ENGINE_WIDE_LIMITS`]) must equal the runtime's.
    ///
    /// [`ENGINE_WIDE_LIMITS`]: super::ENGINE_WIDE_LIMITS
    pub fn with_limits(self, limits: SandboxLimits) -> Result<LoadedProjector, RuntimeError> {
        limits.validate()?;
        if limits.max_wasm_stack_bytes != self.inner.runtime.limits().max_wasm_stack_bytes {
            return Err(RuntimeError::Limits(InvalidLimit {
                key: "max_wasm_stack_bytes",
                reason: "applies to the whole engine; set it under [limits], not per projector",
            }));
        }
        Ok(LoadedProjector {
            inner: self.inner,
            log_budget: Arc::new(LogBudget::new(&limits)),
            emit_rate: Arc::new(EmitRate::new(&limits)),
            limits: Arc::new(limits),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_mixing_contract_versions_is_refused_naming_both() {
        let runtime = Runtime::new(RuntimeConfig::default()).expect("a runtime");
        let wasm = wat::parse_str(
            r#"(component
                (import "refract:projector/sql@0.1.0" (instance))
                (import "refract:projector/log@0.2.0" (instance))
            )"#,
        )
        .expect("valid text");
        let err = runtime.load(&wasm).expect_err("mixed versions");
        let message = err.to_string();
        assert!(matches!(err, RuntimeError::WrongWorld { .. }), "{err:?}");
        for needle in [
            "mixes contract versions",
            "`refract:projector/sql@0.1.0`",
            "`refract:projector/log@0.2.0`",
            "contract-0-1",
        ] {
            assert!(message.contains(needle), "{needle}: {message}");
        }
    }

    #[test]
    fn imports_name_the_contract_version() {
        let names = |names: &[&str]| names.iter().map(|&n| n.to_owned()).collect::<Vec<_>>();
        assert_eq!(
            contract_of_imports(&names(&[
                "wasi:io/streams@0.2.0",
                "refract:projector/sql@0.2.0"
            ]))
            .ok()
            .flatten(),
            Some(ContractVersion::V0_2)
        );
        assert_eq!(
            contract_of_imports(&names(&["refract:projector/types@0.1.0"]))
                .ok()
                .flatten(),
            Some(ContractVersion::V0_1)
        );
        assert!(matches!(
            contract_of_imports(&names(&["wasi:io/streams@0.2.0"])),
            Ok(None)
        ));
    }

    #[test]
    fn headers_are_told_apart() {
        assert!(matches!(
            check_header(b""),
            Err(RuntimeError::NotWasm { .. })
        ));
        assert!(matches!(
            check_header(b"(module)"),
            Err(RuntimeError::NotWasm { reason }) if reason.contains("text")
        ));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(RuntimeError::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(matches!(
            check_header(b"\0asm\x02\0\0\0"),
            Err(RuntimeError::NotWasm { .. })
        ));
    }
}
