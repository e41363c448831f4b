//! Named scenarios: each turns (seed, duration, topology) into a fault plan. The plan is a pure
//! function of its inputs, so the same seed replays the same schedule.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cluster::Topology;
use crate::faults::{Fault, Planned, Way};

pub const SCENARIOS: [&str; 10] = [
    "leader-kill",
    "region-partition",
    "flaky-wan",
    "disk-corruption",
    "primary-loss-promote",
    "rolling-restart",
    "mixed",
    "upload-retry-kill",
    "wiped-node",
    "double-failover",
];

/// Builds the plan of `scenario`. Faults start after a tenth of the run (the workload warms
/// up) and none starts in the last fifth (so the run ends with the cluster healing).
pub fn plan(
    scenario: &str,
    seed: u64,
    duration_ms: u64,
    topology: &Topology,
) -> anyhow::Result<Vec<Planned>> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5EED_FA17);
    let regions = topology.0.len();
    let first = duration_ms / 10;
    let last = duration_ms * 4 / 5;
    let mut plan = Vec::new();
    let mut at = first;
    let mut push = |at: &mut u64, hold_ms: u64, gap_ms: u64, fault: Fault| {
        plan.push(Planned {
            at_ms: *at,
            hold_ms,
            fault,
        });
        *at += hold_ms + gap_ms;
    };
    match scenario {
        "leader-kill" => {
            let mut round = 0;
            while at < last {
                let region = pick_region(&mut rng, regions);
                let hold = rng.random_range(1_500..4_000);
                let gap = rng.random_range(2_000..4_000);
                let fault = match round % 3 {
                    2 => Fault::PauseLeader { region },
                    _ => Fault::KillLeader { region },
                };
                push(&mut at, hold, gap, fault);
                round += 1;
            }
        }
        "region-partition" => {
            while at < last {
                let hold = rng.random_range(3_000..7_000);
                let gap = rng.random_range(2_000..4_000);
                let mirror = (regions > 1 && rng.random_range(0..4) != 0)
                    .then(|| rng.random_range(1..regions));
                let fault = match mirror {
                    Some(region) => Fault::PartitionRegion {
                        region,
                        way: match rng.random_range(0..3) {
                            0 => Way::Both,
                            1 => Way::MirrorToPrimary,
                            _ => Way::PrimaryToMirror,
                        },
                    },
                    None => {
                        let region = pick_multi_node_region(&mut rng, topology).unwrap_or(0);
                        Fault::IsolateNodeInbound {
                            region,
                            node: rng.random_range(1..=topology.0[region]),
                        }
                    }
                };
                push(&mut at, hold, gap, fault);
            }
        }
        "flaky-wan" => {
            while at < last {
                let hold = rng.random_range(4_000..8_000);
                let gap = rng.random_range(1_000..3_000);
                let fault = if regions > 1 && rng.random_range(0..4) != 0 {
                    Fault::FlakyWan {
                        region: rng.random_range(1..regions),
                        latency_ms: rng.random_range(20..80),
                        jitter_ms: rng.random_range(0..30),
                        loss_per_mille: rng.random_range(0..50),
                        mbit: rng.random_range(5..50),
                    }
                } else {
                    let region = rng.random_range(0..regions);
                    Fault::SlowNodeGrpc {
                        region,
                        node: rng.random_range(1..=topology.0[region]),
                        latency_ms: rng.random_range(20..150),
                    }
                };
                push(&mut at, hold, gap, fault);
            }
        }
        "disk-corruption" => {
            let Some(_) = pick_multi_node_region(&mut rng, topology) else {
                anyhow::bail!(
                    "disk-corruption needs a region of at least 2 nodes (repair reads from a peer)"
                );
            };
            while at < last {
                let region = pick_multi_node_region(&mut rng, topology).unwrap_or(0);
                let fault = Fault::CorruptChunks {
                    region,
                    node: rng.random_range(1..=topology.0[region]),
                    count: rng.random_range(1..5),
                    pick: rng.random(),
                };
                push(&mut at, 1_000, rng.random_range(3_000..6_000), fault);
            }
        }
        "primary-loss-promote" => {
            if regions < 2 {
                anyhow::bail!("primary-loss-promote needs at least two regions");
            }
            let at = duration_ms * 3 / 10;
            plan.push(Planned {
                at_ms: at,
                hold_ms: duration_ms / 5,
                fault: Fault::PrimaryLossPromote { mirror: 1 },
            });
        }
        "upload-retry-kill" => {
            let mut round = 0;
            while at < last {
                let region = pick_region(&mut rng, regions);
                let node = rng.random_range(1..=topology.0[region]);
                push(
                    &mut at,
                    1_000,
                    rng.random_range(3_000..6_000),
                    Fault::UploadRetryKill {
                        region,
                        node,
                        round,
                    },
                );
                round += 1;
            }
        }
        "wiped-node" => {
            let Some(_) = pick_multi_node_region(&mut rng, topology) else {
                anyhow::bail!("wiped-node needs a region of at least 2 nodes");
            };
            while at < last {
                let region = pick_multi_node_region(&mut rng, topology).unwrap_or(0);
                let node = rng.random_range(1..=topology.0[region]);
                push(
                    &mut at,
                    3_000,
                    rng.random_range(3_000..6_000),
                    Fault::WipeNode { region, node },
                );
            }
        }
        "double-failover" => {
            if regions < 3 {
                anyhow::bail!("double-failover needs at least three regions");
            }
            plan.push(Planned {
                at_ms: duration_ms * 3 / 10,
                hold_ms: duration_ms * 3 / 10,
                fault: Fault::DoubleFailover {
                    first: 1,
                    second: 2,
                },
            });
        }
        "rolling-restart" => {
            for region in 0..regions {
                push(&mut at, 1_000, 2_000, Fault::RollingRestart { region });
            }
        }
        "mixed" => {
            while at < last {
                let hold = rng.random_range(2_000..6_000);
                let gap = rng.random_range(1_500..4_000);
                let region = pick_region(&mut rng, regions);
                let node = rng.random_range(1..=topology.0[region]);
                let fault = match rng.random_range(0..8) {
                    0 => Fault::KillLeader { region },
                    1 => Fault::KillNode { region, node },
                    2 => Fault::PauseNode { region, node },
                    3 if regions > 1 => Fault::PartitionRegion {
                        region: rng.random_range(1..regions),
                        way: Way::Both,
                    },
                    4 if regions > 1 => Fault::FlakyWan {
                        region: rng.random_range(1..regions),
                        latency_ms: rng.random_range(20..80),
                        jitter_ms: rng.random_range(0..30),
                        loss_per_mille: rng.random_range(0..50),
                        mbit: rng.random_range(5..50),
                    },
                    5 => Fault::IsolateNodeInbound { region, node },
                    6 if topology.0[region] > 1 => Fault::CorruptChunks {
                        region,
                        node,
                        count: rng.random_range(1..4),
                        pick: rng.random(),
                    },
                    _ => Fault::SlowNodeGrpc {
                        region,
                        node,
                        latency_ms: rng.random_range(20..150),
                    },
                };
                push(&mut at, hold, gap, fault);
            }
        }
        other => anyhow::bail!(
            "unknown scenario {other:?}; one of {}",
            SCENARIOS.join(", ")
        ),
    }
    Ok(plan)
}

/// The primary most of the time, a mirror otherwise.
fn pick_region(rng: &mut StdRng, regions: usize) -> usize {
    if regions > 1 && rng.random_range(0..10) >= 7 {
        rng.random_range(1..regions)
    } else {
        0
    }
}

fn pick_multi_node_region(rng: &mut StdRng, topology: &Topology) -> Option<usize> {
    let candidates: Vec<usize> = (0..topology.0.len())
        .filter(|i| topology.0[*i] > 1)
        .collect();
    if candidates.is_empty() {
        return None;
    }
    Some(candidates[rng.random_range(0..candidates.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        let topology: Topology = "3,1,3".parse().expect("topology");
        for scenario in SCENARIOS {
            let a = plan(scenario, 42, 60_000, &topology).expect("plan");
            let b = plan(scenario, 42, 60_000, &topology).expect("plan");
            assert_eq!(
                serde_json::to_string(&a).expect("json"),
                serde_json::to_string(&b).expect("json")
            );
            assert!(!a.is_empty(), "{scenario} plans faults");
        }
        let a = plan("mixed", 1, 60_000, &topology).expect("plan");
        let b = plan("mixed", 2, 60_000, &topology).expect("plan");
        assert_ne!(
            serde_json::to_string(&a).expect("json"),
            serde_json::to_string(&b).expect("json")
        );
    }
}
