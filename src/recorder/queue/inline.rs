//! The awaited `record_interception` call: under the call timeout, inside the
//! interception's span, and a row that lands after its timeout ended at once.

use super::RecordQueue;
use super::call::{CallError, TIMED_OUT_NOT_SENT, catching};
use crate::recorder::{Interception, InterceptionEnded, RecordKind};

impl RecordQueue {
    /// The recorder's `record_interception` under the call timeout (see
    /// [`record_interception`](Self::record_interception)).
    pub(super) async fn call_record_interception(
        &self,
        rec: Interception,
    ) -> Result<(), CallError> {
        let id = rec.id;
        let recorder = self.shared.recorder.clone();
        let mut call = Box::pin(async move { catching(recorder.record_interception(&rec)).await });
        // D17: awaited inside the interception's span, so its child.
        let span = tracing::info_span!(
            "aibridge.record",
            kind = RecordKind::Interception.as_str(),
            record_id = %id,
            attempt = 1,
            outcome = tracing::field::Empty,
        );
        let timed = tokio::time::timeout(self.shared.config.call_timeout, &mut call);
        let timed = tracing::Instrument::instrument(timed, span.clone()).await;
        span.record(
            "outcome",
            if matches!(timed, Ok(Ok(()))) {
                "written"
            } else {
                "error"
            },
        );
        match timed {
            Ok(r) => r,
            Err(_) => {
                let sink = self.sink(id);
                tokio::spawn(async move {
                    if call.await.is_ok() {
                        tracing::warn!(interception_id = %id, "record_interception landed after its timeout; ending it");
                        sink.end(InterceptionEnded {
                            id,
                            ended_at: std::time::SystemTime::now(),
                            outcome: crate::recorder::Outcome::Failed,
                            error: Some(TIMED_OUT_NOT_SENT.to_owned()),
                        })
                        .await;
                    }
                });
                Err(CallError::TimedOut)
            }
        }
    }
}
