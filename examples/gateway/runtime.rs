//! The tokio runtime of the gateway: `AIBRIDGE_WORKER_THREADS` worker threads; unset, one
//! fewer than the cores this process may run on (at least one), which leaves a core to the
//! recorder's writer thread and the rest of the machine. On 2 cores, unpinned, one worker
//! cost 7–31 % less CPU per request than two (BENCHMARKS.md, "Worker threads").

use std::future::Future;
use std::process::ExitCode;

/// The runtime, or a message for a bad `AIBRIDGE_WORKER_THREADS`.
pub(crate) fn build(
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    builder.worker_threads(worker_threads(get)?.unwrap_or_else(|| default_workers(cores)));
    builder
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// `AIBRIDGE_WORKER_THREADS`: a whole number from 1 to 1024; `None` when unset or empty.
fn worker_threads(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<usize>, String> {
    let Some(v) = get("AIBRIDGE_WORKER_THREADS").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match v.trim().parse::<usize>() {
        Ok(n @ 1..=1024) => Ok(Some(n)),
        _ => Err(format!(
            "AIBRIDGE_WORKER_THREADS: {v:?} is not a whole number from 1 to 1024"
        )),
    }
}

/// The workers when `AIBRIDGE_WORKER_THREADS` is unset: one fewer than `cores`, at least one.
fn default_workers(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

/// Runs `main` on the runtime; exit code 2 when the runtime cannot be configured.
pub(crate) fn run<F: Future<Output = ExitCode>>(main: impl FnOnce() -> F) -> ExitCode {
    match build(&crate::config::env) {
        Ok(rt) => rt.block_on(main()),
        Err(e) => {
            eprintln!("aibridge gateway: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::worker_threads;

    fn with(v: Option<&str>) -> Result<Option<usize>, String> {
        worker_threads(&|name| {
            assert_eq!(name, "AIBRIDGE_WORKER_THREADS");
            v.map(str::to_owned)
        })
    }

    #[test]
    fn worker_threads_are_a_whole_number_or_the_default() {
        assert_eq!(with(None), Ok(None));
        assert_eq!(with(Some("")), Ok(None));
        assert_eq!(with(Some("1")), Ok(Some(1)));
        assert_eq!(with(Some(" 4 ")), Ok(Some(4)));
        for bad in ["0", "-1", "two", "1025", "1.5"] {
            let e = with(Some(bad)).unwrap_err();
            assert!(
                e.contains("AIBRIDGE_WORKER_THREADS") && e.contains(bad),
                "{e}"
            );
        }
    }

    #[test]
    fn unset_leaves_one_core_to_the_rest() {
        assert_eq!(super::default_workers(1), 1);
        assert_eq!(super::default_workers(2), 1);
        assert_eq!(super::default_workers(8), 7);
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let rt = super::build(&|_| None).unwrap();
        assert_eq!(rt.metrics().num_workers(), super::default_workers(cores));
    }

    #[test]
    fn the_runtime_has_the_workers_asked_for() {
        let rt = super::build(&|_| Some("3".to_owned())).unwrap();
        assert_eq!(rt.metrics().num_workers(), 3);
        let e = super::build(&|_| Some("0".to_owned())).unwrap_err();
        assert!(e.contains("AIBRIDGE_WORKER_THREADS"), "{e}");
    }
}
