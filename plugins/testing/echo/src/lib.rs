//! Test plugin `echo`: runs the variant a node label names; well-behaved.

use serde::Deserialize;
use wasmdaemon_plugin_sdk::{
    Decision, Interest, NodeRef, Nodes, Plugin, PluginInfo, SetInfo, info,
};

/// A node with this label runs the variant the value names (the plain template otherwise).
pub const VARIANT_LABEL: &str = "wasmdaemon.test/variant";
/// A node with this label is skipped, with the value as the reason.
pub const SKIP_LABEL: &str = "wasmdaemon.test/skip";

/// Echoes node labels back as decisions.
pub struct Echo;

/// Optional config: `{"reject": "message"}` makes `validate-config` fail with that message.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EchoConfig {
    /// The message to reject the config with.
    pub reject: Option<String>,
}

/// Decides one node from its labels; the decision borrows from the batch.
pub fn decide_node(node: NodeRef<'_>) -> Decision<'_> {
    if let Some(reason) = node.label(SKIP_LABEL) {
        return Decision::skip(reason);
    }
    match node.label(VARIANT_LABEL) {
        Some(variant) => Decision::variant(variant),
        None => Decision::plain(),
    }
}

impl Plugin for Echo {
    type Config = Option<EchoConfig>;

    fn describe() -> PluginInfo {
        PluginInfo::new(
            "test-echo",
            env!("CARGO_PKG_VERSION"),
            "Runs the variant a node's wasmdaemon.test/variant label names",
        )
        .with_interest(Interest::nothing().labels([VARIANT_LABEL, SKIP_LABEL]))
    }

    fn validate_config(config: &Self::Config, _variants: &[String]) -> Result<(), String> {
        match config.as_ref().and_then(|config| config.reject.as_ref()) {
            Some(message) => Err(message.clone()),
            None => Ok(()),
        }
    }

    fn decide<'a>(
        set: &'a SetInfo,
        _: &'a Self::Config,
        nodes: &'a Nodes<'a>,
    ) -> Result<Vec<Decision<'a>>, String> {
        info(&format!(
            "test-echo: {}/{}: {} nodes",
            set.namespace,
            set.name,
            nodes.len()
        ));
        Ok(nodes.iter().map(decide_node).collect())
    }
}

wasmdaemon_plugin_sdk::export_plugin!(Echo);

#[cfg(test)]
mod tests {
    use wasmdaemon_plugin_sdk::{BatchBuilder, NodeSpec};

    use super::*;

    #[test]
    fn labels_choose_variant_skip_or_plain() {
        let batch = BatchBuilder::of([
            NodeSpec::named("a").with_label(VARIANT_LABEL, "gpu"),
            NodeSpec::named("b")
                .with_label(SKIP_LABEL, "told to")
                .with_label(VARIANT_LABEL, "gpu"),
            NodeSpec::named("c"),
        ]);
        let nodes = Nodes::new(&batch).unwrap();
        let decisions: Vec<_> = nodes.iter().map(decide_node).collect();
        assert_eq!(
            decisions,
            [
                Decision::variant("gpu"),
                Decision::skip("told to"),
                Decision::plain()
            ]
        );
    }

    #[test]
    fn a_reject_config_fails_validation_with_its_message() {
        let validate = wasmdaemon_plugin_sdk::validate_config::<Echo>;
        assert_eq!(validate("null", &[]), Ok(()));
        assert_eq!(validate("{}", &[]), Ok(()));
        assert_eq!(validate(r#"{"reject": "no"}"#, &[]), Err("no".to_owned()));
    }
}
