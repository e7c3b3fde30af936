//! A connected member of a group, as the gateway holds it.

use tokio::sync::mpsc;

use super::actor::Request;
use super::types::{AckMode, GroupDelivery, Settle};
use switchyard_model::MessageId;

/// Most messages a member takes from its queue at once.
const MEMBER_BATCH: usize = 256;

/// A connected member of a group. Dropping it leaves the group.
pub struct Member {
    pub(super) group: String,
    pub(super) id: String,
    pub(super) key: u64,
    pub(super) ack: AckMode,
    pub(super) rx: mpsc::Receiver<GroupDelivery>,
    pub(super) commands: mpsc::Sender<Request>,
    pub(super) leaves: mpsc::UnboundedSender<u64>,
    /// With `ack=auto`: ids of the last batch, acknowledged once the
    /// connection asks for more (it took the batch).
    pub(super) written: Vec<MessageId>,
}

impl Member {
    /// The member id that acknowledgements name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The ack mode.
    pub fn ack(&self) -> AckMode {
        self.ack
    }

    /// Waits for the next messages (up to 256 at once). `None` when the
    /// group was deleted or the node is shutting down. Cancel-safe. With
    /// `ack=auto` the previous batch is acknowledged first.
    pub async fn next(&mut self) -> Option<Vec<GroupDelivery>> {
        if !self.written.is_empty() {
            let cmd = Request::Settle {
                member: Some(self.id.clone()),
                ids: self.written.clone(),
                op: Settle::Ack,
                reply: None,
            };
            self.commands.send(cmd).await.ok()?;
            self.written.clear();
        }
        let first = self.rx.recv().await?;
        let mut out = Vec::with_capacity(8);
        out.push(first);
        while out.len() < MEMBER_BATCH {
            match self.rx.try_recv() {
                Ok(d) => out.push(d),
                Err(_) => break,
            }
        }
        if self.ack == AckMode::Auto {
            self.written = out.iter().map(|d| d.message.id).collect();
        }
        Some(out)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.leaves.send(self.key);
    }
}
