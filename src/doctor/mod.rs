//! `k3s-autoscaler doctor`: a live preflight of everything the service needs, one line per
//! check with ✔ or ✘ and, for a failure, what to do. Each check is a function returning a
//! [`Check`]; the verdicts are pure functions over what the outside systems answered, unit
//! tested in their modules. The command exits 0 only when no check failed; a check whose
//! feature is not configured (no queue, no Alertmanager, no Prometheus URL) is skipped and
//! says so.

mod alerting;
mod aws;
mod kube;
mod routes;

use serde::Serialize;

use crate::config::Config;

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Works as the service needs it.
    Pass,
    /// Would make the service fail or misbehave.
    Fail,
    /// Not configured, so not checked.
    Skip,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked, e.g. `DynamoDB table k3s-autoscaler-demo`.
    pub name: String,
    /// The verdict.
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// What to do about a failure.
    pub fix: Option<String>,
}

impl Check {
    /// A passed check.
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { name: name.into(), verdict: Verdict::Pass, detail: detail.into(), fix: None }
    }
    /// A failed check and its fix.
    pub fn fail(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name: name.into(), verdict: Verdict::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }
    /// A check not run because its feature is not configured.
    pub fn skip(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { name: name.into(), verdict: Verdict::Skip, detail: detail.into(), fix: None }
    }
}

/// Runs every check against the live systems `config` names, in a fixed order.
pub async fn run(config: &Config) -> Vec<Check> {
    let mut checks = aws::checks(config).await;
    checks.extend(kube::checks(config).await);
    checks.extend(alerting::checks(config).await);
    checks
}

/// The report: one line per check (and its fix, indented), then a summary line.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for check in checks {
        let mark = match check.verdict {
            Verdict::Pass => "✔",
            Verdict::Fail => "✘",
            Verdict::Skip => "-",
        };
        out.push_str(&format!("{mark} {}: {}\n", check.name, check.detail));
        if let Some(fix) = &check.fix {
            out.push_str(&format!("    fix: {fix}\n"));
        }
    }
    let failed = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    let skipped = checks.iter().filter(|c| c.verdict == Verdict::Skip).count();
    out.push_str(&format!("{} checks: {} failed, {skipped} skipped\n", checks.len(), failed));
    out
}

/// Whether every check passed or was skipped (the command's exit code 0).
pub fn all_passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.verdict != Verdict::Fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_marks_each_check_and_a_failure_fails_the_run() {
        let checks = vec![
            Check::pass("table t", "keys cluster_id, sk; TTL on expires_at"),
            Check::fail("launch template lt", "HttpTokens optional", "require IMDSv2"),
            Check::skip("notice queue", "interruption.queue_url not set"),
        ];
        assert_eq!(
            render(&checks),
            "✔ table t: keys cluster_id, sk; TTL on expires_at\n\
             ✘ launch template lt: HttpTokens optional\n    fix: require IMDSv2\n\
             - notice queue: interruption.queue_url not set\n\
             3 checks: 1 failed, 1 skipped\n"
        );
        assert!(!all_passed(&checks));
        assert!(all_passed(&[checks[0].clone(), checks[2].clone()]), "a skipped check does not fail the run");
    }
}
