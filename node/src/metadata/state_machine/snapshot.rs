//! Installing a primary's snapshot on a mirror: staging its pairs under `x/`, then replacing
//! the state in bounded steps (see `Command::SnapshotFinish` and `Command::SnapshotInstall`).

use super::Txn;
use super::FIRST_APPLICATION_KEY;
use crate::metadata::keys;
use crate::metadata::model::{
    ChangeLogHead, Command, InstallCursor, InstallPhase, Outcome, RegionRole, Staging,
};

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

impl Txn<'_, '_> {
    /// The commands of a mirror's snapshot catch-up: begin, parts, finish, install steps,
    /// abort.
    pub(super) fn apply_snapshot(&mut self, command: &Command) -> anyhow::Result<Outcome> {
        match command {
            Command::SnapshotBegin { head, id } => {
                if let Some(installing) = self.installing()? {
                    // A half-replaced state is finished first, whoever began it.
                    return Ok(installing);
                }
                self.clear_staging()?;
                let staging = Staging {
                    id: id.clone(),
                    head: *head,
                    pairs: 0,
                    install: None,
                };
                self.put(keys::STAGING.to_vec(), &staging)?;
                Ok(Outcome::SnapshotStaged)
            }
            Command::SnapshotPart { id, pairs } => {
                let Some(mut staging) = self.get::<Staging>(keys::STAGING)? else {
                    // Legacy proposers (no ids) began without a staging record.
                    if id.is_some() {
                        return Ok(Outcome::SnapshotIgnored);
                    }
                    self.stage_pairs(pairs)?;
                    return Ok(Outcome::SnapshotStaged);
                };
                if staging.id != *id || staging.install.is_some() {
                    return Ok(Outcome::SnapshotIgnored);
                }
                self.stage_pairs(pairs)?;
                staging.pairs += pairs.len() as u64;
                self.put(keys::STAGING.to_vec(), &staging)?;
                Ok(Outcome::SnapshotStaged)
            }
            Command::SnapshotFinish {
                head,
                id,
                pairs,
                step_keys,
            } => {
                let staging = self.get::<Staging>(keys::STAGING)?;
                match (&staging, id) {
                    (Some(staging), Some(_)) if staging.id != *id => {
                        return Ok(Outcome::SnapshotIgnored)
                    }
                    (None, Some(_)) => return Ok(Outcome::SnapshotIgnored),
                    _ => {}
                }
                if let Some(installing) = staging.as_ref().and_then(installing) {
                    return Ok(installing);
                }
                if let (Some(staging), Some(expected)) = (&staging, pairs) {
                    if staging.pairs != *expected {
                        return Ok(Outcome::SnapshotIncomplete {
                            staged: staging.pairs,
                            expected: *expected,
                        });
                    }
                }
                if self.role()? == RegionRole::Primary {
                    return Ok(Outcome::NotAMirror);
                }
                let cursor = InstallCursor {
                    head: *head,
                    phase: InstallPhase::Clear,
                    next: serde_bytes::ByteBuf::from(FIRST_APPLICATION_KEY.to_vec()),
                    staged_head: self.get_raw(&keys::staged(keys::CHANGELOG_HEAD))?.is_some(),
                    steps: 0,
                };
                match (staging, step_keys) {
                    (Some(mut staging), Some(_)) => {
                        staging.install = Some(cursor);
                        self.put(keys::STAGING.to_vec(), &staging)?;
                        Ok(Outcome::SnapshotInstalling {
                            steps: 0,
                            visited: 0,
                        })
                    }
                    // Nodes before command version 3 replace the whole state in this apply.
                    (staging, _) => self.install_step(staging, cursor, usize::MAX),
                }
            }
            Command::SnapshotInstall { id, max_keys } => {
                let Some(staging) = self.get::<Staging>(keys::STAGING)? else {
                    return Ok(Outcome::SnapshotIgnored);
                };
                let Some(cursor) = staging.install.clone() else {
                    return Ok(Outcome::SnapshotIgnored);
                };
                if staging.id != *id {
                    return Ok(Outcome::SnapshotIgnored);
                }
                self.install_step(Some(staging), cursor, (*max_keys).max(1) as usize)
            }
            Command::SnapshotAbort { id } => {
                match self.get::<Staging>(keys::STAGING)? {
                    // A half-replaced state cannot be given back: it is finished instead.
                    Some(staging) if staging.id == *id && staging.install.is_none() => {}
                    _ => return Ok(Outcome::SnapshotIgnored),
                }
                self.clear_staging()?;
                Ok(Outcome::SnapshotAborted)
            }
            other => anyhow::bail!("{} is not a snapshot command", other.kind()),
        }
    }
}
