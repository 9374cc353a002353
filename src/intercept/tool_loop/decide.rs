//! The one continue-or-finish rule of the tool loop (mcp.md "The loop", D12), used by the
//! blocking loop and by the streaming views alike, and the texts of its reasons.

use std::cmp::Ordering;
use std::fmt;

/// How an upstream response ended, as far as the loop cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ending {
    /// It called injected tools.
    pub(crate) injected: bool,
    /// It also called tools the client runs.
    pub(crate) client_tool: bool,
    /// It ended normally: a stream cut short, or a Responses `response.incomplete` or
    /// `response.failed`, never continues the loop.
    pub(crate) complete: bool,
}

/// What the loop does after an upstream response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Run the injected calls and call the upstream again, with the injected tools.
    Execute,
    /// The bound is reached: answer the injected calls with the limit error and make one
    /// last upstream call without the injected tools.
    LastCall,
    /// This response is the answer. Its injected calls, if it has any, are hidden and
    /// recorded as not executed, for the given reason.
    Finish(Option<NotExecuted>),
}

impl Decision {
    /// Whether the loop makes another upstream call (the response's end is hidden).
    pub(crate) fn continues(self) -> bool {
        !matches!(self, Self::Finish(_))
    }
}

/// Why injected calls were not executed (their ToolUsage's invocation error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotExecuted {
    /// The loop bound (D12).
    LimitReached,
    /// The response also called client tools (or ended without completing).
    ClientTools,
}

impl NotExecuted {
    /// The recorded text.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::LimitReached => "tool loop limit reached",
            Self::ClientTools => "not executed: the response also called client tools",
        }
    }
}

impl fmt::Display for NotExecuted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result text of a call answered by the limit procedure (D12).
pub(crate) fn limit_result(max_iterations: u32) -> String {
    format!("aibridge: tool loop limit reached ({max_iterations} iterations)")
}

/// The decision for the response of upstream call `iteration` (1-based) of a loop bounded
/// by `max_iterations` (D12): calls `1..max` may carry injected tools and run them; call
/// `max` answers them with the limit error and triggers one last call without the injected
/// tools; that call's response (`iteration > max`) is the answer whatever it asks for.
pub(crate) fn decide(iteration: u32, max_iterations: u32, ending: Ending) -> Decision {
    if !ending.injected {
        return Decision::Finish(None);
    }
    match iteration.cmp(&max_iterations) {
        Ordering::Greater => Decision::Finish(Some(NotExecuted::LimitReached)),
        _ if ending.client_tool || !ending.complete => {
            Decision::Finish(Some(NotExecuted::ClientTools))
        }
        Ordering::Equal => Decision::LastCall,
        Ordering::Less => Decision::Execute,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLS: Ending = Ending {
        injected: true,
        client_tool: false,
        complete: true,
    };

    #[test]
    fn calls_below_the_bound_run_at_the_bound_end_with_one_last_call() {
        assert_eq!(decide(1, 10, CALLS), Decision::Execute);
        assert_eq!(decide(9, 10, CALLS), Decision::Execute);
        assert_eq!(decide(10, 10, CALLS), Decision::LastCall);
        assert_eq!(
            decide(11, 10, CALLS),
            Decision::Finish(Some(NotExecuted::LimitReached))
        );
        // A bound of one: the first response's calls get the limit error.
        assert_eq!(decide(1, 1, CALLS), Decision::LastCall);
    }

    #[test]
    fn no_injected_call_finishes_without_a_reason() {
        for iteration in [1, 10, 11] {
            let ending = Ending {
                injected: false,
                client_tool: true,
                complete: false,
            };
            assert_eq!(decide(iteration, 10, ending), Decision::Finish(None));
        }
    }

    #[test]
    fn client_calls_or_an_incomplete_end_finish_and_the_bound_names_the_reason_first() {
        let mixed = Ending {
            client_tool: true,
            ..CALLS
        };
        let cut = Ending {
            complete: false,
            ..CALLS
        };
        for ending in [mixed, cut] {
            assert_eq!(
                decide(3, 10, ending),
                Decision::Finish(Some(NotExecuted::ClientTools))
            );
            assert_eq!(
                decide(10, 10, ending),
                Decision::Finish(Some(NotExecuted::ClientTools))
            );
            assert_eq!(
                decide(11, 10, ending),
                Decision::Finish(Some(NotExecuted::LimitReached))
            );
        }
    }

    #[test]
    fn reasons_keep_their_recorded_texts() {
        assert_eq!(
            NotExecuted::LimitReached.to_string(),
            "tool loop limit reached"
        );
        assert_eq!(
            NotExecuted::ClientTools.to_string(),
            "not executed: the response also called client tools"
        );
        assert_eq!(
            limit_result(2),
            "aibridge: tool loop limit reached (2 iterations)"
        );
        assert!(Decision::Execute.continues() && Decision::LastCall.continues());
        assert!(!Decision::Finish(None).continues());
    }
}
