//! `zone-variants`: nodes in listed availability zones run that zone's variant.
//!
//! Config (`spec.policy.config` of the WasmDaemonSet):
//!
//! ```json
//! {"zoneVariants": {"us-east-1a": "zone-a", "us-east-1b": "zone-b"}, "skipOtherZones": false}
//! ```
//!
//! A node whose `topology.kubernetes.io/zone` label names a listed zone runs that zone's variant;
//! any other node runs the plain template, or is skipped when `skipOtherZones` is true.

use std::collections::BTreeMap;

use serde::Deserialize;
use wasmdaemon_plugin_sdk::config::Problems;
use wasmdaemon_plugin_sdk::{
    Decision, Interest, NodeRef, Nodes, Plugin, PluginInfo, SetInfo, check_variant, debug,
};

/// The label holding a node's availability zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The plugin. Rename it, and `name` in `describe`, when you copy this template.
pub struct ZoneVariants;

/// The parsed config. Unknown fields are errors, so typos do not pass silently.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Zone name to variant name.
    pub zone_variants: BTreeMap<String, String>,
    /// Skip nodes in zones not listed (else they run the plain template).
    #[serde(default)]
    pub skip_other_zones: bool,
}

impl Plugin for ZoneVariants {
    type Config = Config;

    fn describe() -> PluginInfo {
        PluginInfo::new(
            "zone-variants",
            env!("CARGO_PKG_VERSION"),
            "Runs the variant mapped to a node's availability zone",
        )
        // Ask only for what `decide` reads: the host sends nothing else, and does not call the
        // plugin again for a node whose zone label did not change.
        .with_interest(Interest::nothing().labels([ZONE_LABEL]))
    }

    fn validate_config(config: &Config, variants: &[String]) -> Result<(), String> {
        let mut problems = Problems::new();
        for (zone, variant) in &config.zone_variants {
            problems.check(check_variant(
                &format!("zoneVariants.{zone}"),
                variant,
                variants,
            ));
        }
        problems.finish()
    }

    // Decisions may borrow from the set, the config and the batch (`'a`): a variant name taken
    // from the config costs no allocation per node.
    fn decide<'a>(
        set: &'a SetInfo,
        config: &'a Config,
        nodes: &'a Nodes<'a>,
    ) -> Result<Vec<Decision<'a>>, String> {
        debug(&format!(
            "deciding {} nodes for {}/{}",
            nodes.len(),
            set.namespace,
            set.name
        ));
        Ok(nodes.iter().map(|node| decide_node(config, node)).collect())
    }
}

wasmdaemon_plugin_sdk::export_plugin!(ZoneVariants);

/// Decides one node.
pub fn decide_node<'a>(config: &'a Config, node: NodeRef<'_>) -> Decision<'a> {
    let zone = node.label(ZONE_LABEL);
    match zone.and_then(|zone| config.zone_variants.get(zone)) {
        Some(variant) => Decision::variant(variant.as_str()),
        None if config.skip_other_zones => {
            Decision::skip(format!("zone {} is not listed", zone.unwrap_or("(none)")))
        }
        None => Decision::plain(),
    }
}

#[cfg(test)]
mod tests {
    use wasmdaemon_plugin_sdk::{BatchBuilder, NodeSpec, decide, validate_config};

    use super::*;

    const CONFIG: &str = r#"{"zoneVariants": {"us-east-1a": "zone-a"}, "skipOtherZones": true}"#;

    #[test]
    fn nodes_in_a_listed_zone_run_its_variant_and_others_are_skipped() {
        let set = SetInfo::new("zone-probe", CONFIG, ["zone-a"]);
        let batch = BatchBuilder::of([
            NodeSpec::named("a").with_label(ZONE_LABEL, "us-east-1a"),
            NodeSpec::named("b").with_label(ZONE_LABEL, "us-east-1b"),
        ]);

        // The logic, on the SDK's view of the batch.
        let config: Config = wasmdaemon_plugin_sdk::parse_config(CONFIG).unwrap();
        let nodes = Nodes::new(&batch).unwrap();
        let decisions: Vec<_> = nodes
            .iter()
            .map(|node| decide_node(&config, node))
            .collect();
        assert_eq!(decisions[0], Decision::variant("zone-a"));
        assert_eq!(
            decisions[1],
            Decision::skip("zone us-east-1b is not listed")
        );

        // The exact path of the component's `decide` export, down to the answer's string table.
        let answer = decide::<ZoneVariants>(&set, &batch).unwrap();
        assert_eq!(answer.strings, ["zone-a", "zone us-east-1b is not listed"]);
    }

    #[test]
    fn variants_the_set_does_not_declare_are_rejected() {
        let error = validate_config::<ZoneVariants>(CONFIG, &["other".to_owned()]).unwrap_err();
        assert!(
            error.contains("zoneVariants.us-east-1a: `zone-a` is not a variant"),
            "{error}"
        );
    }
}
