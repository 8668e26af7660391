//! The load profile of a replayed day, read from a small TOML file (tests/replay/day.toml)
//! or from a Prometheus' history (history.rs): offered load per hour (or per `load_step`) as
//! a share of a reference pool's capacity, flash sales, the pool's bounds and boot time, and
//! instance prices.

use std::time::Duration;

use serde::Deserialize;

use crate::support::sim::model::WORKER_CPUS;

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);
/// A day, the span of a profile.
pub const DAY: Duration = Duration::from_secs(24 * 3600);

/// A flash sale: the load of its time multiplied by `factor` for `minutes`.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FlashSale {
    /// Start, `HH:MM`.
    pub at: String,
    pub minutes: u32,
    pub factor: f64,
}

/// The pool the day is played on.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub min: u32,
    pub max: u32,
    /// From launch to Node Ready, a humantime string.
    pub boot: String,
}

/// Dollars per instance-hour.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    pub on_demand: f64,
    pub spot: f64,
}

/// A day's load and the pool it runs on.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Workers whose capacity `load` is a share of.
    pub reference_workers: u32,
    /// Offered load at each step of the day from 00:00, as a share of the reference capacity.
    pub load: Vec<f64>,
    /// Time between two `load` points, a humantime string dividing the day; one hour (24
    /// points) when absent. A history read from Prometheus keeps its finer steps, so a
    /// spike shorter than an hour is replayed as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_step: Option<String>,
    #[serde(default)]
    pub flash_sale: Vec<FlashSale>,
    pub pool: Pool,
    pub prices: Prices,
}

/// Parses `HH:MM` into the time since midnight.
pub fn time_of_day(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a time HH:MM");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let (h, m): (u64, u64) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 24 || m > 59 || (h == 24 && m > 0) {
        return Err(bad());
    }
    Ok(HOUR * h as u32 + MINUTE * m as u32)
}

/// `HH:MM` of a time since midnight.
pub fn clock(t: Duration) -> String {
    let minutes = t.as_secs() / 60;
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// A part of the day, `HH:MM-HH:MM`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slice {
    pub from: Duration,
    pub to: Duration,
}

impl Slice {
    /// The whole day.
    pub const DAY: Slice = Slice { from: Duration::ZERO, to: DAY };

    pub fn parse(text: &str) -> Result<Slice, String> {
        let (from, to) = text.split_once('-').ok_or_else(|| format!("{text:?} is not HH:MM-HH:MM"))?;
        let slice = Slice { from: time_of_day(from)?, to: time_of_day(to)? };
        if slice.to <= slice.from {
            return Err(format!("{text:?}: the end must come after the start"));
        }
        Ok(slice)
    }

    pub fn hours(&self) -> f64 {
        (self.to - self.from).as_secs_f64() / 3600.0
    }
}

impl Profile {
    /// Reads and checks a profile file.
    pub fn parse(text: &str) -> Result<Profile, String> {
        let profile: Profile = toml::from_str(text).map_err(|e| e.to_string())?;
        profile.check()?;
        Ok(profile)
    }

    /// What `parse` checks, for profiles made in code too (history.rs).
    pub fn check(&self) -> Result<(), String> {
        let step = self.parse_step()?;
        let points = (DAY.as_secs() / step.as_secs()) as usize;
        if self.load.len() != points {
            return Err(format!(
                "load needs {points} values, one every {}, has {}",
                humantime::format_duration(step),
                self.load.len()
            ));
        }
        if let Some(v) = self.load.iter().find(|v| !(0.0..=10.0).contains(*v)) {
            return Err(format!("load share {v} is outside 0..10"));
        }
        for sale in &self.flash_sale {
            time_of_day(&sale.at)?;
            if !(sale.factor > 0.0 && sale.minutes > 0) {
                return Err(format!("flash sale at {}: factor and minutes must be positive", sale.at));
            }
        }
        if self.pool.min == 0 || self.pool.min > self.pool.max {
            return Err("pool: need 1 <= min <= max".into());
        }
        humantime::parse_duration(&self.pool.boot).map_err(|e| format!("pool.boot: {e}"))?;
        if self.reference_workers == 0 || self.prices.on_demand <= 0.0 || self.prices.spot <= 0.0 {
            return Err("reference_workers and prices must be positive".into());
        }
        Ok(())
    }

    fn parse_step(&self) -> Result<Duration, String> {
        let Some(text) = &self.load_step else { return Ok(HOUR) };
        let step = humantime::parse_duration(text).map_err(|e| format!("load_step: {e}"))?;
        if step < MINUTE || step > HOUR || step.subsec_nanos() != 0 || DAY.as_secs() % step.as_secs() != 0 {
            return Err(format!("load_step {text:?}: need whole seconds from 1m to 1h that divide a day"));
        }
        Ok(step)
    }

    /// Time between two `load` points.
    pub fn step(&self) -> Duration {
        self.parse_step().expect("checked by parse")
    }

    /// Launch to Node Ready.
    pub fn boot(&self) -> Duration {
        humantime::parse_duration(&self.pool.boot).expect("checked by parse")
    }

    /// Offered load in CPUs at `t` since midnight.
    pub fn load_at(&self, t: Duration) -> f64 {
        let steps = t.as_secs_f64() / self.step().as_secs_f64();
        let n = self.load.len();
        let i = (steps.floor() as usize).min(n - 1);
        let (a, b) = (self.load[i], self.load[(i + 1) % n]);
        let share = a + (b - a) * (steps - i as f64).min(1.0);
        let capacity = f64::from(self.reference_workers) * WORKER_CPUS;
        share * capacity * self.sale_factor(t)
    }

    /// The flash sales' multiplier at `t`, ramping over a minute at each end.
    fn sale_factor(&self, t: Duration) -> f64 {
        let mut factor = 1.0;
        for sale in &self.flash_sale {
            let start = time_of_day(&sale.at).expect("checked by parse");
            let end = start + MINUTE * sale.minutes;
            if t < start || t >= end {
                continue;
            }
            let edge = (t - start).min(end - t).as_secs_f64() / 60.0;
            factor *= 1.0 + (sale.factor - 1.0) * edge.min(1.0);
        }
        factor
    }

    /// Workers the pool starts with at `t`: the fewest (within its bounds) that keep the
    /// load under the scale-up line, so the replay starts settled.
    pub fn initial_workers(&self, t: Duration) -> u32 {
        let load = self.load_at(t);
        let fits = |n: u32| crate::support::sim::model::worker_busy(load, n as usize) <= 0.70;
        (self.pool.min..=self.pool.max).find(|n| fits(*n)).unwrap_or(self.pool.max)
    }
}

/// The spec's day (tests/replay/day.toml).
pub fn default_day() -> Profile {
    Profile::parse(include_str!("../day.toml")).expect("tests/replay/day.toml is a valid profile")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_day_matches_the_spec() {
        let day = default_day();
        let share = |h: u64| day.load_at(HOUR * h as u32) / 10.0;
        for h in (0..9).chain(22..24) {
            assert!((0.2..=0.3).contains(&share(h)), "off-peak {h}:00 at {}", share(h));
        }
        for h in 9..=21 {
            assert!((0.7..=0.8).contains(&share(h)), "peak {h}:00 at {}", share(h));
        }
        // The hour's own load moves a little (80 % at 12:00, 78 % at 13:00) under the sale.
        let sale = day.load_at(HOUR * 12 + MINUTE * 15) / day.load_at(HOUR * 12);
        assert!((sale - 5.0).abs() < 0.05, "flash sale factor {sale}");
        assert!(day.load_at(HOUR * 12 + MINUTE * 31) < day.load_at(HOUR * 12 + MINUTE * 15) / 4.0);
    }

    #[test]
    fn slices_and_times_parse_or_explain() {
        assert_eq!(Slice::parse("11:00-13:00"), Ok(Slice { from: HOUR * 11, to: HOUR * 13 }));
        assert!(Slice::parse("13:00-11:00").is_err());
        assert!(time_of_day("25:00").is_err());
        assert_eq!(clock(HOUR * 9 + MINUTE * 5), "09:05");
    }

    #[test]
    fn bad_profiles_are_refused() {
        let day = include_str!("../day.toml");
        assert!(Profile::parse(&day.replace("0.25, 0.22,", "")).unwrap_err().contains("24 values"));
        assert!(Profile::parse(&day.replace("min = 2", "min = 20")).is_err());
        assert!(Profile::parse(&day.replace("at = \"12:00\"", "at = \"noon\"")).is_err());
        let fine = day.replace("reference_workers = 5", "reference_workers = 5\nload_step = \"30m\"");
        assert!(Profile::parse(&fine).unwrap_err().contains("48 values"));
        let odd = day.replace("reference_workers = 5", "reference_workers = 5\nload_step = \"7m\"");
        assert!(Profile::parse(&odd).unwrap_err().contains("divide a day"));
    }

    #[test]
    fn a_finer_step_is_followed_between_its_points() {
        let mut day = default_day();
        day.flash_sale.clear();
        day.load_step = Some("30m".into());
        day.load = (0..48).map(|i| if i == 25 { 1.0 } else { 0.5 }).collect();
        day.check().expect("48 half-hours");
        // 12:30 is point 25; 12:15 is half-way up to it; 13:00 is back at 0.5.
        assert!((day.load_at(HOUR * 12 + MINUTE * 30) - 10.0).abs() < 1e-9);
        assert!((day.load_at(HOUR * 12 + MINUTE * 15) - 7.5).abs() < 1e-9);
        assert!((day.load_at(HOUR * 13) - 5.0).abs() < 1e-9);
        // After 23:30 the day wraps to its first point.
        assert!((day.load_at(HOUR * 23 + MINUTE * 45) - 5.0).abs() < 1e-9);
    }
}
