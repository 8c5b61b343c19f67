//! Unit tests of the `label-rules` plugin's selector semantics and config checks, run natively.

use wasmdaemon_plugin_sdk::{
    BatchBuilder, Decision, NodeSpec, Nodes, Plugin, SetInfo, parse_config, wit,
};

use crate::{Config, LabelRules};

fn variants() -> Vec<String> {
    ["gpu", "edge", "arm"].map(String::from).to_vec()
}

fn config(json: &str) -> Config {
    let config: Config = parse_config(json).unwrap();
    config.check(&variants()).unwrap();
    config
}

fn validate(json: &str) -> Result<(), String> {
    wasmdaemon_plugin_sdk::validate_config::<LabelRules>(json, &variants())
}

fn node(labels: &[(&str, &str)]) -> NodeSpec {
    labels
        .iter()
        .fold(NodeSpec::named("n"), |node, (key, value)| {
            node.with_label(*key, *value)
        })
}

/// Decides natively; the outcomes are compared as `(variant, skip reason)`.
fn decide(config: &Config, nodes: impl IntoIterator<Item = NodeSpec>) -> Vec<Decision<'static>> {
    let batch = BatchBuilder::of(nodes);
    let nodes = Nodes::new(&batch).unwrap();
    crate::decide(config, &nodes)
        .iter()
        .map(
            |decision| match (decision.skip_reason(), decision.variant_name()) {
                (Some(reason), _) => Decision::skip(reason.to_owned()),
                (None, Some(variant)) => Decision::variant(variant.to_owned()),
                (None, None) => Decision::plain(),
            },
        )
        .collect()
}

fn selects(selector: &str, labels: &[(&str, &str)]) -> bool {
    let json = format!(r#"{{"rules": [{{"selector": {selector}, "variant": "gpu"}}]}}"#);
    decide(&config(&json), [node(labels)]) == [Decision::variant("gpu")]
}

#[test]
fn match_labels_need_every_label_with_its_exact_value() {
    let selector = r#"{"matchLabels": {"gpu": "true", "zone": "a"}}"#;
    assert!(selects(
        selector,
        &[("gpu", "true"), ("zone", "a"), ("x", "y")]
    ));
    assert!(!selects(selector, &[("gpu", "true"), ("zone", "b")]));
    assert!(!selects(selector, &[("gpu", "true")]));
}

#[test]
fn expressions_follow_kubernetes_semantics() {
    let in_ab =
        r#"{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}"#;
    assert!(selects(in_ab, &[("zone", "b")]));
    assert!(!selects(in_ab, &[("zone", "c")]));
    assert!(!selects(in_ab, &[]));

    let not_in = r#"{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}"#;
    assert!(selects(not_in, &[("zone", "b")]));
    assert!(
        selects(not_in, &[]),
        "NotIn selects nodes without the label"
    );
    assert!(!selects(not_in, &[("zone", "a")]));

    let exists = r#"{"matchExpressions": [{"key": "edge", "operator": "Exists"}]}"#;
    assert!(selects(exists, &[("edge", "")]));
    assert!(!selects(exists, &[]));

    let absent = r#"{"matchExpressions": [{"key": "edge", "operator": "DoesNotExist"}]}"#;
    assert!(selects(absent, &[]));
    assert!(!selects(absent, &[("edge", "")]));
}

#[test]
fn an_empty_selector_selects_every_node() {
    assert!(selects("{}", &[]));
}

#[test]
fn the_first_matching_rule_wins_and_the_default_covers_the_rest() {
    let config = config(
        r#"{
            "rules": [
                {"selector": {"matchExpressions": [{"key": "maintenance", "operator": "Exists"}]},
                 "skip": "node is in maintenance"},
                {"selector": {"matchLabels": {"accelerator": "nvidia"}}, "variant": "gpu"},
                {"selector": {"matchLabels": {"kubernetes.io/arch": "arm64"}}, "variant": "arm"},
                {"selector": {"matchLabels": {"node-role.kubernetes.io/edge": ""}}}
            ],
            "default": {"skip": "not a labelled node"}
        }"#,
    );
    let nodes = [
        node(&[("maintenance", "yes"), ("accelerator", "nvidia")]),
        node(&[("accelerator", "nvidia"), ("kubernetes.io/arch", "arm64")]),
        node(&[("kubernetes.io/arch", "arm64")]),
        node(&[("node-role.kubernetes.io/edge", "")]),
        node(&[]),
    ];
    assert_eq!(
        decide(&config, nodes),
        vec![
            Decision::skip("node is in maintenance"),
            Decision::variant("gpu"),
            Decision::variant("arm"),
            Decision::plain(),
            Decision::skip("not a labelled node"),
        ]
    );
}

#[test]
fn config_errors_name_the_field_path() {
    let error = validate(
        r#"{"rules": [{"selector": {"matchExpressions": [{"key": "a", "operator": "in"}]}}]}"#,
    )
    .unwrap_err();
    assert!(
        error.contains("rules[0].selector.matchExpressions[0].operator"),
        "{error}"
    );
    assert!(error.contains("unknown variant `in`"), "{error}");
    let error = validate(r#"{"rules": [{"selecter": {}}]}"#).unwrap_err();
    assert!(error.contains("unknown field `selecter`"), "{error}");
}

#[test]
fn selector_and_outcome_problems_are_all_reported() {
    let error = validate(
        r#"{"rules": [
            {"selector": {"matchExpressions": [
                {"key": "zone", "operator": "In"},
                {"key": "edge", "operator": "Exists", "values": ["x"]},
                {"key": "Bad_Prefix.io/x", "operator": "Exists"}
            ]}, "variant": "gpu"},
            {"selector": {"matchLabels": {"ok": "not ok"}}, "variant": "huge"},
            {"selector": {}, "variant": "gpu", "skip": "both"}
        ], "default": {"skip": " "}}"#,
    )
    .unwrap_err();
    let expected = [
        "config: rules[0].selector.matchExpressions[0].values: operator In needs at least one",
        "config: rules[0].selector.matchExpressions[1].values: operator Exists takes no values",
        "config: rules[0].selector.matchExpressions[2].key: `Bad_Prefix.io/x`: the prefix",
        "config: rules[1].selector.matchLabels.ok: value `not ok`: must be at most 63 characters",
        "config: rules[1].variant: `huge` is not a variant of this set",
        "config: rules[2]: give either `variant` or `skip`, not both",
        "config: default.skip: give a reason for skipping",
    ];
    for line in expected {
        assert!(error.contains(line), "missing {line:?} in:\n{error}");
    }
    assert_eq!(error.lines().count(), expected.len(), "{error}");
}

#[test]
fn interest_is_all_labels_and_nothing_else() {
    let interest = LabelRules::describe().interest;
    assert_eq!(interest.labels, vec!["*".to_owned()]);
    assert!(interest.resources.is_empty() && interest.annotations.is_empty());
    assert!(!interest.node_info && !interest.taints && !interest.conditions);
}

#[test]
fn the_exported_decide_path_parses_the_set_config() {
    let set = SetInfo::new(
        "s",
        r#"{"rules": [{"selector": {"matchLabels": {"a": "1"}}, "variant": "edge"}]}"#,
        variants(),
    );
    let nodes = BatchBuilder::of([node(&[("a", "1")]), node(&[])]);
    let answer = wasmdaemon_plugin_sdk::decide::<LabelRules>(&set, &nodes).unwrap();
    assert_eq!(answer.strings, ["edge"]);
    let run = |variant| {
        wit::Decision::Run(wit::Run {
            variant,
            overrides: None,
        })
    };
    assert_eq!(answer.decisions, [run(Some(0)), run(None)]);
}
