//! The tool loop's one driver step, shared by the blocking and the streaming relay (mcp.md
//! "The loop"): answer a turn's injected calls — run them, or at the iteration bound answer
//! them with the limit error — queue their records, and build the next upstream body.
//!
//! What differs between the two relays stays with them: how the turn is found (the blocking
//! body, or the stream view's `take_turn`), what tells that the client left (the response
//! future, or the body channel), and keep-alives while the tools run (streaming only).

use std::time::Instant;

use bytes::Bytes;

use super::task::{Ctx, Failure, Stop};
use crate::intercept::facts::Fact;
use crate::intercept::tool_loop::{Decision, LoopState, NotExecuted, Turn, execute, not_executed};

/// Runs one step for `turn` as `decision` says ([`Decision::Execute`] or
/// [`Decision::LastCall`]); `abort` resolves when the client leaves or the bridge shuts
/// down, and cancels the running tool call. The step owns the loop state: it returns it,
/// advanced by the turn, with the next upstream body. On `Err` the loop is over (its state
/// dropped) and the interrupted call's record has been queued.
pub(super) async fn step(
    ctx: &mut Ctx,
    mut lp: LoopState,
    turn: Turn,
    decision: Decision,
    facts: &mut Vec<Fact>,
    abort: impl Future<Output = Stop>,
) -> Result<(LoopState, Bytes), Stop> {
    let last = decision == Decision::LastCall;
    let results = if last {
        not_executed(&lp.tools, &turn, NotExecuted::LimitReached, facts)
    } else {
        let waiting = Instant::now();
        let run = execute(&lp.tools, lp.executor.as_ref(), &turn, facts, abort).await;
        ctx.waited += waiting.elapsed();
        match run {
            Ok(results) => results,
            Err(stop) => {
                ctx.sink.facts(facts).await;
                return Err(stop);
            }
        }
    };
    ctx.sink.facts(facts).await;
    let next = ctx
        .adapter
        .advance(&mut lp, turn, &results, last)
        .ok_or_else(Failure::internal)?;
    Ok((lp, next))
}
