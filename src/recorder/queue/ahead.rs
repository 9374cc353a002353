//! [`InterceptionRecord::Queued`](super::InterceptionRecord::Queued): the interception
//! record queued ahead of its children instead of awaited before the upstream call.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::breaker::Admit;
use super::{Delivery, InterceptionRecord, RecordQueue, RecordSink, Tracker};
use crate::BoxError;
use crate::recorder::{Interception, Record, RecordKind};

impl RecordQueue {
    /// Whether the host chose to queue interception records instead of awaiting them.
    pub(crate) fn queues_interceptions(&self) -> bool {
        self.shared.config.interception == InterceptionRecord::Queued
    }

    /// Queues the interception record and returns the sink of its other records, which
    /// are written only once it has landed (and counted failed, not written, if it never
    /// does). The interception counts as one of the sink's outstanding records, so its end
    /// is written after it too. Fails at once only when the recorder breaker is open or the
    /// shutdown deadline has passed.
    pub(crate) fn record_interception_ahead(
        &self,
        rec: Interception,
    ) -> Result<RecordSink, BoxError> {
        let admitted = self.shared.breaker.admit();
        if admitted == Admit::Reject {
            self.shared
                .report(RecordKind::Interception, Delivery::Failed);
            return Err("the recorder breaker is open (recent interception records failed); request refused".into());
        }
        if !self.shared.started(RecordKind::Interception) {
            self.shared.breaker.settle(admitted, false);
            return Err("the bridge is shutting down; interception not recorded".into());
        }
        let (landed_tx, landed) = tokio::sync::watch::channel(None);
        let sink = self.sink_landing(rec.id, Some(landed));
        sink.tracker.pending.fetch_add(1, Ordering::AcqRel);
        let shared = self.shared.clone();
        let tracker = Arc::clone(&sink.tracker);
        tokio::spawn(async move {
            let outcome = shared
                .deliver_with_retry(&Record::Interception(Box::new(rec)))
                .await;
            shared.breaker.settle(admitted, outcome == Delivery::Failed);
            let _ = landed_tx.send(Some(outcome == Delivery::Written));
            shared.settle(RecordKind::Interception, outcome);
            shared.release(&tracker).await;
        });
        Ok(sink)
    }
}

impl Tracker {
    /// Waits until the interception queued ahead has its outcome: whether it was written
    /// (`true` at once when it was awaited instead).
    pub(super) async fn landed(&self) -> bool {
        let Some(rx) = &self.landed else {
            return true;
        };
        let mut rx = rx.clone();
        matches!(
            rx.wait_for(Option::is_some).await.as_deref(),
            Ok(Some(true))
        )
    }

    /// Whether the interception was queued ahead and failed to land (known once every
    /// record of the sink has finished, the interception included).
    pub(super) fn never_landed(&self) -> bool {
        self.landed
            .as_ref()
            .is_some_and(|rx| *rx.borrow() == Some(false))
    }
}
