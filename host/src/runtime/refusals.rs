//! Components the runtime has refused, remembered by content hash, so the same bad
//! component is refused again at once instead of being examined (or compiled) again.
//!
//! Every refusal that depends only on the bytes is kept in memory, up to
//! [`MAX_REMEMBERED_REFUSALS`]. Those that cost a compile and that the same bytes meet on
//! any machine (the compiler refused the component, or the compile ran out of memory) are
//! also written beside the compile cache, so a restart does not pay them again. A compile
//! timeout is kept in memory only: it measures wall time, so an overloaded machine can
//! hit it with a good component, and remembering it on disk would refuse that component
//! for good. A hostile component therefore costs at most one compile timeout
//! (`limits.compile_timeout_ms`) per process. A refusal for running out of time or memory
//! is only reused while the limit is no higher than when it happened, so raising the
//! limit gives the component another chance.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::error::RuntimeError;
use super::limits::{SandboxLimits, format_bytes};

/// How many refusals the runtime remembers in memory; the oldest is forgotten first.
pub const MAX_REMEMBERED_REFUSALS: usize = 1_024;

/// A refusal, in a form that rebuilds the same error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum Refusal {
    Invalid { message: String },
    UnsupportedImport { import: String, message: String },
    WrongWorld { message: String },
    Link { message: String },
    CompileTimeout { limit_ms: u64 },
    CompileMemory { limit_bytes: usize },
}

impl Refusal {
    /// The refusal worth remembering for `error`, if any: only those that the same
    /// bytes would meet again, whatever the database or the instance limits.
    fn of(error: &RuntimeError, limits: &SandboxLimits) -> Option<Refusal> {
        Some(match error {
            RuntimeError::Invalid { message } => Refusal::Invalid {
                message: message.clone(),
            },
            RuntimeError::UnsupportedImport { import, message } => Refusal::UnsupportedImport {
                import: import.clone(),
                message: message.clone(),
            },
            RuntimeError::WrongWorld { message } => Refusal::WrongWorld {
                message: message.clone(),
            },
            RuntimeError::Link { message } => Refusal::Link {
                message: message.clone(),
            },
            RuntimeError::CompileTimeout { limit_ms } => Refusal::CompileTimeout {
                limit_ms: *limit_ms,
            },
            RuntimeError::CompileMemory { .. } => Refusal::CompileMemory {
                limit_bytes: limits.max_compile_memory_bytes,
            },
            _ => return None,
        })
    }

    /// Whether it cost a compile and the same bytes would meet it on any machine, so it
    /// is worth keeping across restarts. A timeout depends on the machine's load.
    fn kept_across_restarts(&self) -> bool {
        matches!(
            self,
            Refusal::Invalid { .. } | Refusal::CompileMemory { .. }
        )
    }

    /// Whether it still holds under `limits`: a budget that was raised deserves a try.
    fn holds_under(&self, limits: &SandboxLimits) -> bool {
        match self {
            Refusal::CompileTimeout { limit_ms } => limits.compile_timeout_ms <= *limit_ms,
            Refusal::CompileMemory { limit_bytes } => {
                limits.max_compile_memory_bytes <= *limit_bytes
            }
            _ => true,
        }
    }

    fn to_error(&self) -> RuntimeError {
        match self.clone() {
            Refusal::Invalid { message } => RuntimeError::Invalid { message },
            Refusal::UnsupportedImport { import, message } => {
                RuntimeError::UnsupportedImport { import, message }
            }
            Refusal::WrongWorld { message } => RuntimeError::WrongWorld { message },
            Refusal::Link { message } => RuntimeError::Link { message },
            Refusal::CompileTimeout { limit_ms } => RuntimeError::CompileTimeout { limit_ms },
            Refusal::CompileMemory { limit_bytes } => RuntimeError::CompileMemory {
                limit: format_bytes(limit_bytes),
            },
        }
    }
}

/// The refusals of one runtime.
#[derive(Debug)]
pub(crate) struct Refusals {
    /// Where compile refusals are kept across restarts (beside the compile cache).
    dir: Option<PathBuf>,
    memory: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    by_sha: HashMap<String, Refusal>,
    order: VecDeque<String>,
}

impl Refusals {
    pub(crate) fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            memory: Mutex::new(Remembered::default()),
        }
    }

    fn file(&self, sha256_hex: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|dir| dir.join(format!("{sha256_hex}.refused.json")))
    }

    /// The error the component with this sha256 was refused with, if it was and the
    /// refusal still holds under `limits`.
    pub(crate) fn get(&self, sha256_hex: &str, limits: &SandboxLimits) -> Option<RuntimeError> {
        let remembered = {
            let memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
            memory.by_sha.get(sha256_hex).cloned()
        };
        let refusal = remembered.or_else(|| {
            let text = fs::read(self.file(sha256_hex)?).ok()?;
            // An unreadable record is only a lost shortcut: the component is examined.
            // A timeout written by an older version is not trusted either.
            serde_json::from_slice::<Refusal>(&text)
                .ok()
                .filter(Refusal::kept_across_restarts)
        })?;
        refusal.holds_under(limits).then(|| refusal.to_error())
    }

    /// Remembers `error` for the component with this sha256, if it is a refusal worth
    /// remembering.
    pub(crate) fn remember(&self, sha256_hex: &str, error: &RuntimeError, limits: &SandboxLimits) {
        let Some(refusal) = Refusal::of(error, limits) else {
            return;
        };
        if refusal.kept_across_restarts()
            && let Some(path) = self.file(sha256_hex)
            && let Ok(text) = serde_json::to_vec(&refusal)
        {
            // Written whole then renamed, like the compile cache's entries.
            let temp = path.with_extension(format!("{}.tmp", std::process::id()));
            if fs::write(&temp, text)
                .and_then(|()| fs::rename(&temp, &path))
                .is_err()
            {
                let _ = fs::remove_file(&temp);
                tracing::warn!(path = %path.display(), "cannot record the refused component");
            }
        }
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        if memory
            .by_sha
            .insert(sha256_hex.to_owned(), refusal)
            .is_none()
        {
            memory.order.push_back(sha256_hex.to_owned());
        }
        while memory.order.len() > MAX_REMEMBERED_REFUSALS {
            if let Some(oldest) = memory.order.pop_front() {
                memory.by_sha.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_come_back_as_the_same_error() {
        let refusals = Refusals::new(None);
        let limits = SandboxLimits::default();
        let error = RuntimeError::UnsupportedImport {
            import: "my:evil/thing".into(),
            message: "imports `my:evil/thing`".into(),
        };
        refusals.remember("abc", &error, &limits);
        let again = refusals.get("abc", &limits).expect("remembered");
        assert_eq!(again.to_string(), error.to_string());
        assert!(refusals.get("other", &limits).is_none());
    }

    #[test]
    fn a_timeout_is_forgotten_when_the_limit_is_raised_and_at_a_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let limits = SandboxLimits {
            compile_timeout_ms: 1_000,
            ..SandboxLimits::default()
        };
        let refusals = Refusals::new(Some(dir.path().to_owned()));
        refusals.remember(
            "abc",
            &RuntimeError::CompileTimeout { limit_ms: 1_000 },
            &limits,
        );
        assert!(matches!(
            refusals.get("abc", &limits),
            Some(RuntimeError::CompileTimeout { limit_ms: 1_000 })
        ));
        let raised = SandboxLimits {
            compile_timeout_ms: 5_000,
            ..limits
        };
        assert!(refusals.get("abc", &raised).is_none());
        let restarted = Refusals::new(Some(dir.path().to_owned()));
        assert!(
            restarted.get("abc", &limits).is_none(),
            "a timeout may come from a loaded machine: it is not kept on disk"
        );
    }

    #[test]
    fn a_compile_memory_refusal_is_kept_on_disk() {
        let dir = tempfile::tempdir().expect("temp dir");
        let limits = SandboxLimits::default();
        Refusals::new(Some(dir.path().to_owned())).remember(
            "abc",
            &RuntimeError::CompileMemory {
                limit: format_bytes(limits.max_compile_memory_bytes),
            },
            &limits,
        );
        let restarted = Refusals::new(Some(dir.path().to_owned()));
        assert!(matches!(
            restarted.get("abc", &limits),
            Some(RuntimeError::CompileMemory { .. })
        ));
    }

    #[test]
    fn memory_is_bounded() {
        let refusals = Refusals::new(None);
        let limits = SandboxLimits::default();
        for index in 0..MAX_REMEMBERED_REFUSALS + 10 {
            let error = RuntimeError::Link {
                message: index.to_string(),
            };
            refusals.remember(&index.to_string(), &error, &limits);
        }
        let memory = refusals.memory.lock().expect("lock");
        assert_eq!(memory.by_sha.len(), MAX_REMEMBERED_REFUSALS);
        assert!(!memory.by_sha.contains_key("0"), "the oldest went first");
    }
}
