//! The environment layer: `K3S_AUTOSCALER__A__B=value` sets key `a.b` of the file's table
//! before it is read into the file's shape.

/// Prefix of environment overrides: `K3S_AUTOSCALER__POOLS__WORKERS__MAX=8`.
pub const ENV_PREFIX: &str = "K3S_AUTOSCALER__";

/// Sets `a.b.c = value` for each `K3S_AUTOSCALER__A__B__C=value`. Values that parse as TOML
/// (numbers, booleans, arrays, quoted strings) keep their type; anything else is a string.
pub(super) fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), String> {
    let mut overrides: Vec<(String, String)> =
        env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
    overrides.sort();
    for (key, raw) in overrides {
        let path: Vec<String> = key[ENV_PREFIX.len()..].split("__").map(str::to_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!("environment override {key} has an empty key segment"));
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let (last, parents) = path.split_last().expect("path has at least one segment");
        let mut cursor = &mut *table;
        for segment in parents {
            let entry =
                cursor.entry(segment.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cursor = entry
                .as_table_mut()
                .ok_or_else(|| format!("environment override {key}: `{segment}` is not a table"))?;
        }
        cursor.insert(last.clone(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::fixture::Fixture;
    use std::time::Duration;

    #[test]
    fn environment_overrides_keys_with_types() {
        let f = Fixture::new();
        let c = f
            .load(
                &f.toml(""),
                &[
                    ("K3S_AUTOSCALER__POOLS__WORKERS__MAX", "9"),
                    ("K3S_AUTOSCALER__POOLS__WORKERS__SCALE_UP_COOLDOWN", "45s"),
                    ("K3S_AUTOSCALER__AWS__ENDPOINT_URL", "http://127.0.0.1:5000"),
                    ("K3S_AUTOSCALER__DRY_RUN", "true"),
                    ("UNRELATED", "x"),
                ],
            )
            .unwrap();
        assert_eq!(c.pools["workers"].max, 9);
        assert_eq!(c.pools["workers"].scale_up_cooldown, Duration::from_secs(45));
        assert_eq!(c.aws.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
        assert!(c.dry_run);
    }
}
