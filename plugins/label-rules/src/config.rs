//! The `label-rules` plugin's config: ordered label-selector rules and a default outcome.

use std::collections::BTreeMap;

use serde::Deserialize;
use wasmdaemon_plugin_sdk::config::{Outcome, Problems, check_outcome, outcome_decision};
use wasmdaemon_plugin_sdk::{Decision, NodeRef};

/// `spec.policy.config` of a set placed by the `label-rules` plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Checked in order; the first rule whose selector matches decides the node.
    pub rules: Vec<Rule>,
    /// What a node that no rule matches gets; the plain template when absent.
    #[serde(default)]
    pub default: Outcome,
}

/// One rule: a label selector, and the outcome for nodes it selects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    /// Which nodes the rule applies to; `{}` selects every node.
    pub selector: Selector,
    /// Run this variant on a selected node.
    pub variant: Option<String>,
    /// Skip a selected node, with this reason.
    pub skip: Option<String>,
}

/// A Kubernetes label selector (`metav1.LabelSelector`): all requirements must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    /// The label has exactly this value.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(default)]
    pub match_expressions: Vec<Expression>,
}

/// A set-based requirement on one label.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expression {
    /// The label key.
    pub key: String,
    /// How the label relates to `values`.
    pub operator: Operator,
    /// Values for `In` and `NotIn`; empty for `Exists` and `DoesNotExist`.
    #[serde(default)]
    pub values: Vec<String>,
}

/// A selector operator, spelled as in Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Operator {
    /// The label exists and its value is one of `values`.
    In,
    /// The label does not exist, or its value is none of `values`.
    NotIn,
    /// The label exists.
    Exists,
    /// The label does not exist.
    DoesNotExist,
}

impl Selector {
    /// Whether the node's labels satisfy every requirement.
    pub fn matches(&self, node: NodeRef<'_>) -> bool {
        self.match_labels
            .iter()
            .all(|(key, value)| node.label(key) == Some(value.as_str()))
            && self
                .match_expressions
                .iter()
                .all(|expression| expression.matches(node))
    }

    fn check(&self, problems: &mut Problems, path: &str) {
        for (key, value) in &self.match_labels {
            if let Err(why) = check_key(key) {
                problems.add(format!("{path}.matchLabels"), format!("key `{key}`: {why}"));
            }
            if let Err(why) = check_value(value) {
                problems.add(
                    format!("{path}.matchLabels.{key}"),
                    format!("value `{value}`: {why}"),
                );
            }
        }
        for (index, expression) in self.match_expressions.iter().enumerate() {
            expression.check(problems, &format!("{path}.matchExpressions[{index}]"));
        }
    }
}

impl Expression {
    /// Whether the node's labels satisfy the requirement.
    pub fn matches(&self, node: NodeRef<'_>) -> bool {
        let value = node.label(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|value| self.values.iter().any(|v| v == value)),
            Operator::NotIn => !value.is_some_and(|value| self.values.iter().any(|v| v == value)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }

    fn check(&self, problems: &mut Problems, path: &str) {
        if let Err(why) = check_key(&self.key) {
            problems.add(format!("{path}.key"), format!("`{}`: {why}", self.key));
        }
        match self.operator {
            Operator::In | Operator::NotIn if self.values.is_empty() => problems.add(
                format!("{path}.values"),
                format!("operator {:?} needs at least one value", self.operator),
            ),
            Operator::Exists | Operator::DoesNotExist if !self.values.is_empty() => problems.add(
                format!("{path}.values"),
                format!("operator {:?} takes no values", self.operator),
            ),
            _ => {}
        }
        for (index, value) in self.values.iter().enumerate() {
            if let Err(why) = check_value(value) {
                problems.add(
                    format!("{path}.values[{index}]"),
                    format!("`{value}`: {why}"),
                );
            }
        }
    }
}

impl Rule {
    /// The decision this rule gives a selected node.
    pub fn decision(&self) -> Decision<'_> {
        outcome_decision(self.variant.as_deref(), self.skip.as_deref())
    }
}

impl Config {
    /// Checks what parsing cannot: selector syntax, outcomes, and variant names against the set's
    /// declared variants. Lists every problem, each with its field path.
    pub fn check(&self, variants: &[String]) -> Result<(), String> {
        let mut problems = Problems::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let path = format!("rules[{index}]");
            rule.selector
                .check(&mut problems, &format!("{path}.selector"));
            let (variant, skip) = (rule.variant.as_deref(), rule.skip.as_deref());
            check_outcome(&mut problems, &path, variant, skip, variants);
        }
        self.default.check(&mut problems, "default", variants);
        problems.finish()
    }
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let valid_label = |part: &str| {
            !part.is_empty()
                && part.len() <= 63
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        };
        if prefix.len() > 253 || !prefix.split('.').all(valid_label) {
            return Err(format!(
                "the prefix `{prefix}` must be a DNS subdomain (lowercase letters, digits, `-` \
                 and `.`, at most 253 characters)"
            ));
        }
    }
    if name.is_empty() {
        return Err("the name part is empty".to_owned());
    }
    check_name(name)
}

/// A label value: empty, or a name of at most 63 characters.
fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        Ok(())
    } else {
        check_name(value)
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let alphanumeric = |b: u8| b.is_ascii_alphanumeric();
    let bytes = name.as_bytes();
    let valid = name.len() <= 63
        && bytes.first().copied().is_some_and(alphanumeric)
        && bytes.last().copied().is_some_and(alphanumeric)
        && bytes
            .iter()
            .all(|&b| alphanumeric(b) || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(
            "must be at most 63 characters of letters, digits, `-`, `_` and `.`, starting and \
             ending with a letter or digit"
                .to_owned(),
        )
    }
}
