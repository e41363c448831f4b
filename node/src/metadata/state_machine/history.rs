//! A region's history: epochs and forks, promotion and demotion, replicated entries from a
//! primary, divergent writes, change-log retention.

use super::Txn;
use crate::metadata::keys;
use crate::metadata::model::{
    ChangeLogHead, ChangeRecord, DivergentWrite, Fork, Outcome, RegionRole, ReplicatedEntry,
};

impl Txn<'_, '_> {
    pub(super) fn max_epoch(&self) -> anyhow::Result<u64> {
        self.get_count(keys::MAX_EPOCH)
    }

    /// Raises the highest epoch seen to at least `epoch`; returns it.
    pub(super) fn raise_max_epoch(&mut self, epoch: u64) -> anyhow::Result<u64> {
        let max_epoch = self.max_epoch()?.max(epoch);
        self.put_raw(keys::MAX_EPOCH.to_vec(), keys::encode_count(max_epoch))?;
        Ok(max_epoch)
    }

    pub(super) fn forks(&self) -> anyhow::Result<Vec<Fork>> {
        if let Some(forks) = self.get::<Vec<Fork>>(keys::FORKS)? {
            return Ok(forks);
        }
        Ok(self.get::<Fork>(keys::FORK)?.into_iter().collect())
    }

    pub(super) fn record_fork(&mut self, fork: Fork) -> anyhow::Result<()> {
        let mut forks = self.forks()?;
        if forks.iter().any(|f| f.epoch == fork.epoch) {
            return Ok(());
        }
        forks.push(fork);
        self.put(keys::FORKS.to_vec(), &forks)
    }

    /// Forgets acknowledged divergent writes and releases their content.
    pub(super) fn ack_divergent(&mut self, seqs: &[u64]) -> anyhow::Result<Outcome> {
        let keys_to_drop: Vec<Vec<u8>> = if seqs.is_empty() {
            self.keys_with_prefix(keys::DIVERGENT_PREFIX)?
        } else {
            seqs.iter().map(|seq| keys::divergent(*seq)).collect()
        };
        let mut removed = 0;
        for key in keys_to_drop {
            let Some(write) = self.get::<DivergentWrite>(&key)? else {
                continue;
            };
            if let Some(command) = &write.command {
                for chunk in self.distinct_command_chunks(command)? {
                    if self.add_count(keys::divergent_chunk(&chunk), -1)? == 0
                        && self.chunk_refs(&chunk)? == 0
                    {
                        self.freed.push(chunk);
                    }
                }
            }
            self.delete(key)?;
            removed += 1;
        }
        Ok(Outcome::DivergentAcknowledged { removed })
    }

    /// Applies primary entries in order: duplicates are skipped, a gap stops the batch, and an
    /// entry from another lineage (an epoch older than one already applied, or another epoch's
    /// entry at a seq already applied) refuses it: the region must resync from a snapshot.
    pub(super) fn apply_replicated(
        &mut self,
        entries: &[ReplicatedEntry],
        raft_index: u64,
    ) -> anyhow::Result<Outcome> {
        if self.role()? == RegionRole::Primary {
            return Ok(Outcome::NotAMirror);
        }
        if let Some(installing) = self.installing()? {
            return Ok(installing);
        }
        for entry in entries {
            let head: ChangeLogHead = self.get(keys::CHANGELOG_HEAD)?.unwrap_or_default();
            if head.needs_snapshot {
                return Ok(Outcome::ReplicationGap {
                    expected: 0,
                    got: entry.seq,
                });
            }
            let diverged = Outcome::ReplicationDiverged {
                seq: entry.seq,
                epoch: entry.epoch,
                applied_epoch: head.epoch,
            };
            if entry.seq <= head.last_seq {
                match self.get::<ChangeRecord>(&keys::change(entry.seq))? {
                    Some(record) if record.epoch != entry.epoch => return Ok(diverged),
                    _ => continue,
                }
            }
            if entry.epoch < head.epoch {
                return Ok(diverged);
            }
            if entry.seq != head.last_seq + 1 {
                return Ok(Outcome::ReplicationGap {
                    expected: head.last_seq + 1,
                    got: entry.seq,
                });
            }
            if entry.epoch > head.epoch && head.last_seq > 0 {
                // The primary's log crossed into a new epoch here: its fork point.
                self.record_fork(Fork {
                    epoch: entry.epoch,
                    after_seq: entry.seq - 1,
                    at_ms: entry.at_ms,
                })?;
            }
            if entry.epoch > self.max_epoch()? {
                self.raise_max_epoch(entry.epoch)?;
            }
            self.apply_change(&entry.command, raft_index, Some(entry))?;
        }
        let head: ChangeLogHead = self.get(keys::CHANGELOG_HEAD)?.unwrap_or_default();
        Ok(Outcome::Replicated { seq: head.last_seq })
    }

    pub(super) fn promote(&mut self, at_ms: i64) -> anyhow::Result<Outcome> {
        let mut head: ChangeLogHead = self.get(keys::CHANGELOG_HEAD)?.unwrap_or_default();
        if self.role()? == RegionRole::Primary {
            return Ok(Outcome::Promoted {
                epoch: head.epoch,
                after_seq: head.last_seq,
            });
        }
        if let Some(installing) = self.installing()? {
            // Half the old state and half the snapshot: never a primary's.
            return Ok(installing);
        }
        // Past every epoch this region has seen, not just its own: a demoted primary promoted
        // again must not reuse the epoch of the region that replaced it.
        let epoch = head.epoch.max(self.max_epoch()?) + 1;
        let fork = Fork {
            epoch,
            after_seq: head.last_seq,
            at_ms,
        };
        head.epoch = fork.epoch;
        head.needs_snapshot = false;
        self.raise_max_epoch(epoch)?;
        self.clear_staging()?;
        self.put(keys::CHANGELOG_HEAD.to_vec(), &head)?;
        self.put(keys::FORK.to_vec(), &fork)?;
        self.record_fork(fork)?;
        self.put(keys::ROLE.to_vec(), &RegionRole::Primary)?;
        Ok(Outcome::Promoted {
            epoch: fork.epoch,
            after_seq: fork.after_seq,
        })
    }

    pub(super) fn demote(
        &mut self,
        role: &RegionRole,
        epoch: u64,
        fork_seq: u64,
        at_ms: i64,
    ) -> anyhow::Result<Outcome> {
        let mut head: ChangeLogHead = self.get(keys::CHANGELOG_HEAD)?.unwrap_or_default();
        // Equal epochs: two regions promoted to the same counter; the fencing side breaks the
        // tie by region name before it proposes this.
        if self.role()? != RegionRole::Primary || epoch < head.epoch {
            return Ok(Outcome::NotAMirror);
        }
        self.raise_max_epoch(epoch)?;
        let first = fork_seq.saturating_add(1);
        let mut divergent = 0;
        if first < head.first_seq && first <= head.last_seq {
            // Trimmed before they could be recorded: say so, never drop them silently.
            let through = (head.first_seq - 1).min(head.last_seq);
            let write = DivergentWrite {
                epoch: head.epoch,
                seq: first,
                at_ms: 0,
                command: None,
                recorded_at_ms: at_ms,
                through_seq: Some(through),
            };
            self.put(keys::divergent(first), &write)?;
            divergent += through - first + 1;
        }
        for seq in first.max(head.first_seq)..=head.last_seq {
            let Some(record) = self.get::<ChangeRecord>(&keys::change(seq))? else {
                continue;
            };
            // The write's content outlives the snapshot that will replace this state, until
            // the operator acknowledges it.
            for chunk in self.distinct_command_chunks(&record.command)? {
                self.add_count(keys::divergent_chunk(&chunk), 1)?;
            }
            let write = DivergentWrite {
                epoch: record.epoch,
                seq: record.seq,
                at_ms: record.at_ms,
                command: Some(record.command),
                recorded_at_ms: at_ms,
                through_seq: None,
            };
            self.put(keys::divergent(seq), &write)?;
            divergent += 1;
        }
        head.needs_snapshot = true;
        self.put(keys::CHANGELOG_HEAD.to_vec(), &head)?;
        self.put(keys::ROLE.to_vec(), role)?;
        Ok(Outcome::Demoted { divergent })
    }

    pub(super) fn trim_change_log(&mut self, before_seq: u64) -> anyhow::Result<Outcome> {
        let mut head: ChangeLogHead = self.get(keys::CHANGELOG_HEAD)?.unwrap_or_default();
        let until = before_seq.min(head.last_seq + 1);
        let mut removed = 0;
        for seq in head.first_seq..until {
            self.delete(keys::change(seq))?;
            removed += 1;
        }
        if until > head.first_seq {
            head.first_seq = until;
            self.put(keys::CHANGELOG_HEAD.to_vec(), &head)?;
        }
        Ok(Outcome::Trimmed { removed })
    }
}
