//! The seeded schedule: every alert, EC2 notice and fault of one soak run, with its moment,
//! computed from the seed alone before the run starts, so a seed replays the same schedule.
//! What a targeted event hits (which spot instance, which draining node) is picked at its
//! moment from what exists then, by the index the schedule drew.

use std::time::Duration;

use crate::support::proxy::AwsFault;

/// splitmix64: small, seedable, the same sequence everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }
}

/// One scheduled action.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `copies` Alertmanager replicas post the same firing alert (HA duplicates).
    Fire {
        up: bool,
        fingerprint: String,
        step: u32,
        copies: usize,
    },
    /// The alert resolves; `lost`: no replica's post arrives (the signal lives until its TTL).
    Resolve {
        fingerprint: String,
        lost: bool,
    },
    /// An EC2 notice for the `pick`-th live spot instance, posted `copies` times.
    Notice {
        spot_warning: bool,
        pick: u64,
        copies: usize,
    },
    /// kill -9 of a service replica.
    Kill {
        replica: usize,
    },
    /// The replica starts again (once DynamoDB answers: it must pass its readiness check).
    Restart {
        replica: usize,
    },
    /// The next `times` calls of `api` (in `zone` index / market if given) get `fault`.
    Aws {
        api: &'static str,
        zone: Option<usize>,
        spot: Option<bool>,
        fault: AwsFault,
        times: usize,
    },
    /// DynamoDB answers 503 to everything until `DynamoUp`.
    DynamoDown,
    DynamoUp,
    /// The next `times` Kubernetes requests `method` … `needle` answer `code`.
    Kube {
        method: &'static str,
        needle: &'static str,
        code: u16,
        times: usize,
    },
    /// etcd compaction: watches from older resourceVersions and old continue tokens get 410.
    Compact,
    /// The API server closes every open watch.
    CloseWatches,
    /// An operator deletes the Node of the `pick`-th cordoned (draining) managed node.
    DeleteDrainingNode {
        pick: u64,
    },
    /// An operator removes the pool label of the `pick`-th managed node.
    RemovePoolLabel {
        pick: u64,
    },
}

impl Action {
    /// Whether this is an injected fault (not traffic), and its kind for the table.
    pub fn fault_kind(&self) -> Option<String> {
        Some(match self {
            Action::Kill { .. } => "replica kill -9".into(),
            Action::Aws { api, fault, zone, .. } => match fault {
                AwsFault::Error { code, .. } if zone.is_some() => format!("AWS {code} (zone, market)"),
                AwsFault::Error { code, .. } => format!("AWS {code} on {api}"),
                AwsFault::Delay(_) => "AWS latency past call_timeout".into(),
                AwsFault::Reset => "AWS connection reset".into(),
                AwsFault::AnswerLost => format!("AWS {api} answer lost"),
            },
            Action::DynamoDown => "DynamoDB unavailable".into(),
            Action::Kube { method, code, needle, .. } => format!("Kubernetes {code} on {method} {needle}"),
            Action::Compact => "Kubernetes compaction (410)".into(),
            Action::CloseWatches => "Kubernetes watches closed".into(),
            Action::DeleteDrainingNode { .. } => "Node deleted by hand mid-drain".into(),
            Action::RemovePoolLabel { .. } => "pool label removed".into(),
            _ => return None,
        })
    }
}

/// An action at its offset from the start of the run (wall clock).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at: Duration,
    pub action: Action,
}

const EC2_APIS: &[&str] = &["CreateFleet", "TerminateInstances", "DescribeInstances", "CreateTags"];
const DYNAMODB_APIS: &[&str] = &["UpdateItem", "Query", "GetItem", "PutItem", "DeleteItem"];
const KUBE: &[(&str, &str)] = &[
    ("GET", "/nodes"),
    ("GET", "/pods"),
    ("GET", "/poddisruptionbudgets"),
    ("PATCH", "/nodes/"),
    ("POST", "/eviction"),
    ("DELETE", "/nodes/"),
];

/// The schedule of one run: traffic and faults over `length`, faults about every
/// `fault_every` on average.
pub fn schedule(seed: u64, length: Duration, fault_every: Duration, zones: usize) -> Vec<Event> {
    let mut rng = Rng::new(seed);
    let mut events = Vec::new();
    traffic(&mut rng, length, &mut events);
    faults(&mut rng, length, fault_every, zones, &mut events);
    events.sort_by_key(|e| e.at);
    events
}

/// Alerts in alternating busy and quiet phases (scale-ups, then scale-downs, a few wall
/// seconds each), so both the launch and the drain paths run under the faults; at a phase
/// change the other direction's alerts resolve (some posts lost). EC2 notices throughout.
fn traffic(rng: &mut Rng, length: Duration, events: &mut Vec<Event>) {
    let mut at = Duration::ZERO;
    let mut firing: Vec<String> = Vec::new();
    let mut next = 0;
    let mut busy = false;
    while at < length {
        busy = !busy;
        // Quiet phases outlast the signal TTL, so lost `resolved` posts of scale-ups expire.
        let phase_end = at + if busy { rng.millis(5000, 10000) } else { rng.millis(12000, 20000) };
        let (ending, kept): (Vec<String>, Vec<String>) =
            firing.drain(..).partition(|fp| fp.starts_with("fp-up") != busy);
        firing = kept;
        for fingerprint in ending {
            at += rng.millis(50, 300);
            events.push(Event { at, action: Action::Resolve { fingerprint, lost: rng.chance(20) } });
        }
        loop {
            at += rng.millis(300, 1500);
            if at >= phase_end.min(length) {
                break;
            }
            let roll = rng.below(100);
            let action = if roll < 45 || firing.is_empty() {
                // A new alert or a repeat of a firing one (Alertmanager's repeat_interval).
                let fingerprint = match rng.chance(50) && !firing.is_empty() {
                    true => rng.pick(&firing),
                    false => {
                        next += 1;
                        let up = busy == rng.chance(85);
                        format!("fp-{}-{next}", if up { "up" } else { "down" })
                    }
                };
                if !firing.contains(&fingerprint) {
                    firing.push(fingerprint.clone());
                }
                let up = fingerprint.starts_with("fp-up");
                Action::Fire {
                    up,
                    fingerprint,
                    step: 1 + rng.below(2) as u32,
                    copies: 1 + rng.below(3) as usize,
                }
            } else if roll < 90 {
                let fingerprint = firing.remove(rng.below(firing.len() as u64) as usize);
                let lost = rng.chance(25);
                if !lost && rng.chance(30) {
                    // Flapping: fires again shortly after resolving.
                    let up = fingerprint.starts_with("fp-up");
                    events.push(Event {
                        at: at + rng.millis(100, 600),
                        action: Action::Fire { up, fingerprint: fingerprint.clone(), step: 1, copies: 2 },
                    });
                    firing.push(fingerprint.clone());
                }
                Action::Resolve { fingerprint, lost }
            } else {
                // A rebalance recommendation, then (often) the spot warning for the same instance.
                let pick = rng.next();
                if rng.chance(60) {
                    events.push(Event {
                        at: at + rng.millis(500, 2500),
                        action: Action::Notice {
                            spot_warning: true,
                            pick,
                            copies: 1 + rng.below(2) as usize,
                        },
                    });
                }
                Action::Notice { spot_warning: false, pick, copies: 1 + rng.below(2) as usize }
            };
            events.push(Event { at, action });
        }
    }
}

fn aws_fault(rng: &mut Rng, zones: usize) -> Action {
    let times = 1 + rng.below(3) as usize;
    match rng.below(8) {
        0 => Action::Aws {
            api: rng.pick(EC2_APIS),
            zone: None,
            spot: None,
            fault: AwsFault::Error { status: 503, code: "RequestLimitExceeded".into() },
            times,
        },
        1 => Action::Aws {
            api: rng.pick(DYNAMODB_APIS),
            zone: None,
            spot: None,
            fault: AwsFault::Error {
                status: 400,
                code: rng.pick(&["ThrottlingException", "ProvisionedThroughputExceededException"]).into(),
            },
            times,
        },
        2 => Action::Aws {
            api: rng.pick(EC2_APIS),
            zone: None,
            spot: None,
            fault: AwsFault::Error { status: 500, code: "InternalError".into() },
            times,
        },
        3 => Action::Aws {
            api: rng.pick(DYNAMODB_APIS),
            zone: None,
            spot: None,
            fault: AwsFault::Error { status: 500, code: "InternalServerError".into() },
            times,
        },
        4 => {
            let api = if rng.chance(50) { rng.pick(EC2_APIS) } else { rng.pick(DYNAMODB_APIS) };
            Action::Aws {
                api,
                zone: None,
                spot: None,
                fault: AwsFault::Delay(rng.millis(2200, 3500)),
                times: 1,
            }
        }
        5 => {
            let api = if rng.chance(50) { rng.pick(EC2_APIS) } else { rng.pick(DYNAMODB_APIS) };
            Action::Aws { api, zone: None, spot: None, fault: AwsFault::Reset, times: 1 }
        }
        6 => Action::Aws {
            api: rng.pick(&["CreateFleet", "TerminateInstances"]),
            zone: None,
            spot: None,
            fault: AwsFault::AnswerLost,
            times: 1,
        },
        _ => Action::Aws {
            api: "CreateFleet",
            zone: Some(rng.below(zones as u64) as usize),
            spot: Some(rng.chance(70)),
            fault: AwsFault::Error { status: 500, code: "InsufficientInstanceCapacity".into() },
            times: 1 + rng.below(5) as usize,
        },
    }
}

fn faults(rng: &mut Rng, length: Duration, every: Duration, zones: usize, events: &mut Vec<Event>) {
    let mean = every.as_millis() as u64;
    let mut at = Duration::ZERO;
    loop {
        at += rng.millis(mean / 4, mean * 7 / 4);
        if at >= length {
            return;
        }
        let roll = rng.below(100);
        let action = match roll {
            0..7 => {
                let replica = rng.below(3) as usize;
                let back = at + rng.millis(300, 4000);
                events.push(Event { at: back, action: Action::Restart { replica } });
                Action::Kill { replica }
            }
            7..48 => aws_fault(rng, zones),
            48..51 => {
                events.push(Event { at: at + rng.millis(1000, 4000), action: Action::DynamoUp });
                Action::DynamoDown
            }
            51..83 => {
                let (method, needle) = rng.pick(KUBE);
                let code = rng.pick(&[429, 409, 500, 504]);
                Action::Kube { method, needle, code, times: 1 + rng.below(3) as usize }
            }
            83..89 => Action::Compact,
            89..94 => Action::CloseWatches,
            94..99 => Action::DeleteDrainingNode { pick: rng.next() },
            _ => Action::RemovePoolLabel { pick: rng.next() },
        };
        events.push(Event { at, action });
    }
}
