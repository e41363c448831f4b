//! Installing a primary's snapshot on a mirror: staging its pairs under `x/`, then replacing
//! the state in bounded steps (see `Command::SnapshotFinish` and `Command::SnapshotInstall`).

use super::Txn;
use crate::keys;
use crate::model::{ChangeLogHead, InstallCursor, InstallPhase, Outcome, Staging};

impl Txn<'_, '_> {
    /// Stages a snapshot's pairs under `x/` (region-local keys never come from a primary).
    pub(super) fn stage_pairs(
        &mut self,
        pairs: &[(serde_bytes::ByteBuf, serde_bytes::ByteBuf)],
    ) -> anyhow::Result<()> {
        for (key, value) in pairs {
            if keys::is_region_local(key) {
                continue;
            }
            self.put_raw(keys::staged(key), value.to_vec())?;
        }
        Ok(())
    }

    /// Drops whatever snapshot is staged.
    pub(super) fn clear_staging(&mut self) -> anyhow::Result<()> {
        for key in self.keys_with_prefix(keys::STAGING_PREFIX)? {
            self.delete(key)?;
        }
        self.delete(keys::STAGING.to_vec())
    }

    /// `Some(SnapshotInstalling)` while a staged snapshot is being installed.
    pub(super) fn installing(&self) -> anyhow::Result<Option<Outcome>> {
        Ok(self
            .get::<Staging>(keys::STAGING)?
            .as_ref()
            .and_then(installing))
    }

    /// One step of replacing everything but region-local keys with the staged snapshot,
    /// visiting at most `budget` keys: first the old state's keys are deleted, in key order,
    /// then the staged keys are moved into place. The last step sets the change-log head to
    /// the snapshot's position. At every step the chunks either state references keep a
    /// reference count (live or staged), so the collector never takes one.
    pub(super) fn install_step(
        &mut self,
        staging: Option<Staging>,
        mut cursor: InstallCursor,
        budget: usize,
    ) -> anyhow::Result<Outcome> {
        let mut visited = 0;
        if cursor.phase == InstallPhase::Clear {
            let mut next = cursor.next.to_vec();
            let mut deletes = Vec::new();
            let mut done = true;
            'scan: loop {
                for item in self.iter_from(&next) {
                    let (key, _) = item?;
                    if visited == budget {
                        next = key;
                        done = false;
                        break 'scan;
                    }
                    visited += 1;
                    if let Some(prefix) = keys::region_local_prefix(&key) {
                        next = keys::after_prefix(prefix);
                        continue 'scan;
                    }
                    // The head is replaced at the end (the readers of this region's position
                    // keep one meanwhile).
                    if !keys::is_region_local(&key) && key != keys::CHANGELOG_HEAD {
                        deletes.push(key);
                    }
                }
                break;
            }
            for key in deletes {
                self.delete(key)?;
            }
            if done {
                cursor.phase = InstallPhase::Move;
                next = keys::STAGING_PREFIX.to_vec();
            }
            cursor.next = serde_bytes::ByteBuf::from(next);
        }
        if cursor.phase == InstallPhase::Move && visited < budget {
            let mut moves = Vec::new();
            let mut done = true;
            for item in self.iter_from(&cursor.next) {
                let (key, value) = item?;
                if !key.starts_with(keys::STAGING_PREFIX) {
                    break;
                }
                if visited == budget {
                    cursor.next = serde_bytes::ByteBuf::from(key);
                    done = false;
                    break;
                }
                visited += 1;
                moves.push((key, value));
            }
            for (staged, value) in moves {
                self.put_raw(staged[keys::STAGING_PREFIX.len()..].to_vec(), value)?;
                self.delete(staged)?;
            }
            if done {
                return self.finish_install(&cursor);
            }
        }
        cursor.steps += 1;
        let steps = cursor.steps;
        let mut staging = staging.ok_or_else(|| anyhow::anyhow!("no staged snapshot"))?;
        staging.install = Some(cursor);
        self.put(keys::STAGING.to_vec(), &staging)?;
        Ok(Outcome::SnapshotInstalling {
            steps,
            visited: visited as u64,
        })
    }

    pub(super) fn finish_install(&mut self, cursor: &InstallCursor) -> anyhow::Result<Outcome> {
        self.delete(keys::STAGING.to_vec())?;
        let mut installed: ChangeLogHead = if cursor.staged_head {
            self.get(keys::CHANGELOG_HEAD)?.unwrap_or_default()
        } else {
            ChangeLogHead::default()
        };
        installed.needs_snapshot = false;
        installed.epoch = cursor.head.epoch;
        installed.last_seq = cursor.head.seq;
        installed.last_at_ms = cursor.head.at_ms;
        self.put(keys::CHANGELOG_HEAD.to_vec(), &installed)?;
        self.reset_chunks = true;
        Ok(Outcome::SnapshotInstalled {
            seq: cursor.head.seq,
        })
    }
}

/// `Some(SnapshotInstalling)` if `staging` is being installed.
pub(super) fn installing(staging: &Staging) -> Option<Outcome> {
    staging
        .install
        .as_ref()
        .map(|cursor| Outcome::SnapshotInstalling {
            steps: cursor.steps,
            visited: 0,
        })
}
